"""The one interface every object store implements.

Exceptions::

    BucketError
    ├── ObjectNotFound       the named object does not exist
    └── PreconditionFailed   a create-only or generation-matched write lost
        └── AlreadyExists    create-only write on an existing object

Names are ``/``-separated keys that pass ``check_name`` (no leading slash,
no empty, ``.`` or ``..`` segments, no backslash or control characters, at
most 1024 UTF-8 bytes); a ``Bucket`` never interprets them beyond that.
Generations are positive integers that grow on every write of a name (GCS
semantics); ``0`` as a precondition means "must not exist".
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec

__all__ = [
    "AlreadyExists",
    "Bucket",
    "BucketError",
    "ObjectNotFound",
    "ObjectStat",
    "PreconditionFailed",
    "check_name",
    "check_prefix",
]

_MAX_NAME_BYTES = 1024  # the GCS limit
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class BucketError(Exception):
    """Base of every storage error."""


class ObjectNotFound(BucketError):
    """The named object does not exist."""


class PreconditionFailed(BucketError):
    """A generation precondition did not hold (HTTP 412 on GCS)."""


class AlreadyExists(PreconditionFailed):
    """A create-only write found the object already there."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe object name, else raise ValueError.

    Every bucket calls this before a name reaches a path or a request, so no
    name can climb out of a folder or alias another (``a//b``, ``./a``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"object name must be a non-empty string (got {name!r:.80})")
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise ValueError(f"object name longer than {_MAX_NAME_BYTES} bytes: {name[:80]!r}...")
    if _BAD_CHARS.search(name):
        raise ValueError(f"object name has a backslash or control character: {name!r:.80}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"object name has an empty, '.' or '..' segment or a leading '/': {name!r:.80}")
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if some valid name could start with it ("" lists everything), else ValueError."""
    if prefix:
        check_name(prefix + "x")
    return prefix


class ObjectStat(msgspec.Struct, frozen=True):
    """What a bucket knows about one object."""

    name: str
    generation: int
    size: int
    md5_hex: str | None = None
    """None where the bucket did not compute it: a local ``write``'s result (hashing every commit written
    cost a 100-event save 4%; ``stat`` and ``read_with_stat`` give it)."""


class Bucket(abc.ABC):
    """An object store: flat names, whole-object writes, generations."""

    url: str

    @abc.abstractmethod
    def read(self, name: str) -> bytes:
        """Return the object's bytes; raise ObjectNotFound."""

    @abc.abstractmethod
    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        """Return bytes and the stat of exactly that version (for compare-and-swap)."""

    @abc.abstractmethod
    def open_read(self, name: str) -> BinaryIO:
        """Open the object for streaming reads; raise ObjectNotFound."""

    @abc.abstractmethod
    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        """Write atomically. ``if_generation_match=0``: create-only (AlreadyExists);
        ``=g``: only if the current generation is g (PreconditionFailed)."""

    def create(self, name: str, data: bytes) -> ObjectStat:
        """Create-only write; raise AlreadyExists if the name is taken."""
        return self.write(name, data, if_generation_match=0)

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Hold ``key``'s lock across every process using this bucket, where the bucket has one; yield
        whether it does. An advisory lock (writers that skip it are not held back), released when the
        block ends or its process dies. Only a folder has one (``LocalBucket``: ``flock``); here, none:
        yields False at once."""
        yield False

    @abc.abstractmethod
    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        """Stream a possibly large object in (chunked/resumable); last writer wins."""

    @abc.abstractmethod
    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        """Names under ``prefix`` in lexicographic order, from ``start_offset`` (inclusive)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object; raise ObjectNotFound if absent."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; return how many."""
        names = list(self.list(prefix))
        for name in names:
            with contextlib.suppress(ObjectNotFound):
                self.delete(name)
        return len(names)

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectStat:
        """Generation, size and checksum; raise ObjectNotFound."""

    def exists(self, name: str) -> bool:
        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True
