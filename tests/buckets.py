"""Bucket tests' own pieces: a double of our ``Bucket`` interface to build on, and a racing writer.

``ForwardingBucket`` sends every call to another bucket. Subclasses override the calls they count
or fail; ``create``, ``exists`` and ``delete_prefix`` stay the interface's own, so they go through
the subclass's ``write``, ``stat`` and ``list``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from storage.bucket import AlreadyExists, Bucket, ObjectStat


class ForwardingBucket(Bucket):
    """``inner``'s objects, under ``inner``'s url."""

    def __init__(self, inner: Bucket) -> None:
        self.inner, self.url = inner, inner.url

    def read(self, name: str) -> bytes:
        return self.inner.read(name)

    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        return self.inner.read_with_stat(name)

    def open_read(self, name: str) -> BinaryIO:
        return self.inner.open_read(name)

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        return self.inner.write(name, data, if_generation_match=if_generation_match)

    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        return self.inner.upload(name, stream)

    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        return self.inner.list(prefix, start_offset=start_offset)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def stat(self, name: str) -> ObjectStat:
        return self.inner.stat(name)


def create_each(bucket: Bucket, names: Iterable[str], writer: int) -> list[str]:
    """Create-only writes of ``writer-<writer>`` to each of ``names``; the names this writer got first."""
    won = []
    for name in names:
        try:
            bucket.create(name, f"writer-{writer}".encode())
            won.append(name)
        except AlreadyExists:
            pass
    return won
