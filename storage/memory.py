"""``MemoryBucket``: the Bucket interface in a dict, for fast unit tests.

Thread-safe (one lock), never shared between processes. Names are kept in a
sorted list beside the dict, so ``list(prefix, start_offset=...)`` is a binary
search, not a scan. Generations come from one counter per bucket, so they grow
on every write of a name, as on GCS. Its ``url`` is ``memory://<hex>``, which
no ``open_bucket`` understands: hand the object itself to whoever needs it.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from storage.bucket import (
    AlreadyExists,
    Bucket,
    ObjectNotFound,
    ObjectStat,
    PreconditionFailed,
    check_name,
    check_prefix,
)

__all__ = ["MemoryBucket"]

_CHUNK = 1 << 20


class MemoryBucket(Bucket):
    """A bucket that lives in this process's memory."""

    def __init__(self) -> None:
        self.url = f"memory://{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, ObjectStat]] = {}
        self._names: list[str] = []  # sorted
        self._generation = 0

    def __repr__(self) -> str:
        return f"MemoryBucket({self.url!r}, {len(self._names)} objects)"

    # -- reading ---------------------------------------------------------

    def read(self, name: str) -> bytes:
        return self.read_with_stat(name)[0]

    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        check_name(name)
        try:
            return self._objects[name]
        except KeyError:
            raise ObjectNotFound(name) from None

    def open_read(self, name: str) -> BinaryIO:
        return io.BytesIO(self.read(name))

    def stat(self, name: str) -> ObjectStat:
        return self.read_with_stat(name)[1]

    def exists(self, name: str) -> bool:
        return check_name(name) in self._objects

    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        check_prefix(prefix)
        start = max(prefix, start_offset or "")
        with self._lock:
            names = self._names[bisect.bisect_left(self._names, start) :]
        return itertools.takewhile(lambda name: name.startswith(prefix), names)

    # -- writing ---------------------------------------------------------

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        check_name(name)
        data = bytes(data)
        with self._lock:
            current = self._objects.get(name)
            if if_generation_match == 0 and current is not None:
                raise AlreadyExists(name)
            if if_generation_match not in (None, 0) and (
                current is None or current[1].generation != if_generation_match
            ):
                have = current[1].generation if current else None
                raise PreconditionFailed(f"{name}: generation is {have}, not {if_generation_match}")
            self._generation += 1
            stat = ObjectStat(name, self._generation, len(data), hashlib.md5(data).hexdigest())
            if current is None:
                bisect.insort(self._names, name)
            self._objects[name] = (data, stat)
            return stat

    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        check_name(name)
        if hasattr(stream, "read"):
            chunks: Iterable[bytes] = iter(lambda: stream.read(_CHUNK), b"")  # type: ignore[union-attr]
        else:
            chunks = stream
        return self.write(name, b"".join(chunks))

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise ObjectNotFound(name)
            del self._names[bisect.bisect_left(self._names, name)]
