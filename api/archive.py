"""A deterministic tar stream of bucket folders, with its exact size known before a byte is sent.

Members come from bucket objects under one or more prefixes (``plan_tar``), and a few may be
given inline (``inline``: a file written for this archive, replacing the object of the same
name or added), e.g. a model card.

Every member is a regular file with fixed metadata (mode 0644, mtime 0, owner
0/0, PAX headers), in name order, without directory entries; the archive
ends with the two zero blocks. So the same objects always give the same
bytes: the size comes from the object sizes alone, and the sha256, computed
once by streaming, is cached by the objects' (name, generation, size).
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections.abc import Iterator

import msgspec

from storage.bucket import Bucket

__all__ = ["TarPlan", "plan_tar", "tar_chunks", "tar_sha256"]

_BLOCK = 512
_CHUNK = 1 << 20
_END = b"\0" * (2 * _BLOCK)


class Member(msgspec.Struct, frozen=True):
    name: str
    arcname: str
    generation: int
    size: int
    data: bytes | None = None
    """The member's bytes when given inline (``name`` is then empty)."""


class TarPlan(msgspec.Struct, frozen=True):
    """What the archive of a folder holds, and how many bytes it will be."""

    members: tuple[Member, ...]
    size: int

    @property
    def key(self) -> tuple[tuple[str, int | str, int], ...]:
        return tuple(
            (
                m.name or m.arcname,
                m.generation if m.data is None else hashlib.sha256(m.data).hexdigest(),
                m.size,
            )
            for m in self.members
        )


def _header(member: Member) -> bytes:
    info = tarfile.TarInfo(member.arcname)
    info.size = member.size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> int:
    return -size % _BLOCK


def plan_tar(
    bucket: Bucket,
    prefix: str,
    *,
    exclude: frozenset[str] = frozenset(),
    also: tuple[tuple[str, str], ...] = (),
    inline: dict[str, bytes] | None = None,
) -> TarPlan:
    """The members under ``prefix`` (a folder ending in ``/``) but ``exclude``, and the archive's size.

    ``also``: more ``(prefix, folder in the archive)`` pairs; ``inline``: archive name -> bytes,
    replacing the object of that name or added after the others.
    """
    inline = dict(inline or {})
    members = []
    for source, folder in ((prefix, ""), *also):
        for name in bucket.list(source):
            if name in exclude:
                continue
            arcname = folder + name[len(source) :]
            data = inline.pop(arcname, None)
            if data is not None:
                members.append(Member("", arcname, 0, len(data), data))
                continue
            stat = bucket.stat(name)
            members.append(Member(name, arcname, stat.generation, stat.size))
    members += [Member("", arcname, 0, len(data), data) for arcname, data in sorted(inline.items())]
    size = sum(len(_header(m)) + m.size + _padding(m.size) for m in members) + len(_END)
    return TarPlan(tuple(members), size)


def tar_chunks(bucket: Bucket, plan: TarPlan) -> Iterator[bytes]:
    """The archive's bytes, streamed object by object (about a megabyte at a time)."""
    for member in plan.members:
        yield _header(member)
        if member.data is not None:
            yield member.data
            if pad := _padding(member.size):
                yield b"\0" * pad
            continue
        sent = 0
        with bucket.open_read(member.name) as fh:
            while sent < member.size and (block := fh.read(min(_CHUNK, member.size - sent))):
                sent += len(block)
                yield block
        if sent != member.size:
            raise RuntimeError(
                f"{member.name} changed while it was being sent ({sent} of {member.size} bytes)"
            )
        if pad := _padding(member.size):
            yield b"\0" * pad
    yield _END


_digests: dict[tuple[tuple[str, int | str, int], ...], str] = {}
_digests_lock = threading.Lock()


def tar_sha256(bucket: Bucket, plan: TarPlan) -> str:
    """The archive's sha256 (streamed once per distinct set of object versions, then cached)."""
    key = plan.key
    with _digests_lock:
        found = _digests.get(key)
    if found is not None:
        return found
    digest = hashlib.sha256()
    for chunk in tar_chunks(bucket, plan):
        digest.update(chunk)
    with _digests_lock:
        if len(_digests) > 4096:
            _digests.clear()
        _digests[key] = digest.hexdigest()
    return _digests[key]
