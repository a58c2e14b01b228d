"""The raw heartbeat archive: one object per job attempt per ledger batch, what its usage was metered from.

Object (``storage.layout.heartbeat_archive``: ``users/<uid>/heartbeats/<job>/<attempt>/<first>-<last>.jsonl``,
created once, before the commit that meters it; its name and sha256 are in that commit's
``Job.UsageMetered`` events), JSON lines::

    {"format":"tune.heartbeats.v1","received":...,"clock_bound_ms":...,"gpu_tolerance_ms":...,
     "bound_count":...,"refused":[...]}                     the header: how the ledger metered them
    {"user_id":...,"job_id":...,"seq":...,...,"signature":...}   each signed heartbeat of the attempt
    ...                                                      in the batch, in arrival order

The heartbeats are every one of the attempt the batch held whose signature verified, repeats and
late ones included, each as ``encode_heartbeat`` writes it: exactly the fields its signature covers,
so the audit can verify it again with the heartbeat key. The header holds what else the rules of
``domain.cumulative`` need to give the same result again: the ledger's receive time, its clock
bound and GPU tolerance, the GPU count GPU time was bounded by, and the seqs the ledger refused to
price (``refused``: never metered).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import msgspec

from storage.heartbeats.heartbeat import Heartbeat, decode_heartbeat, encode_heartbeat

__all__ = ["ARCHIVE_FORMAT", "Archive", "ArchiveHeader", "decode_archive", "encode_archive"]

ARCHIVE_FORMAT = "tune.heartbeats.v1"

_Count = Annotated[int, msgspec.Meta(ge=0)]


class ArchiveHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The first line of an archive (module docstring)."""

    format: str = ARCHIVE_FORMAT
    received: Annotated[datetime, msgspec.Meta(tz=True)]
    clock_bound_ms: _Count
    gpu_tolerance_ms: _Count
    bound_count: _Count
    refused: list[int] = []


class Archive(msgspec.Struct, frozen=True):
    """An archive object's bytes, their sha256, and what they hold."""

    data: bytes
    sha256: str
    header: ArchiveHeader
    heartbeats: list[Heartbeat]


_header_decoder = msgspec.json.Decoder(ArchiveHeader)


def encode_archive(header: ArchiveHeader, heartbeats: Sequence[Heartbeat]) -> Archive:
    """The archive object of ``heartbeats`` (one attempt's, arrival order) under ``header``."""
    lines = [msgspec.json.encode(header), *(encode_heartbeat(h) for h in heartbeats)]
    data = b"\n".join(lines) + b"\n"
    return Archive(data, hashlib.sha256(data).hexdigest(), header, list(heartbeats))


def decode_archive(data: bytes) -> Archive:
    """What an archive object holds; ``msgspec.DecodeError`` (or ValueError) if it is not one."""
    first, *rest = data.splitlines()
    header = _header_decoder.decode(first)
    if header.format != ARCHIVE_FORMAT:
        raise ValueError(f"not a heartbeat archive of format {ARCHIVE_FORMAT}: {header.format!r:.80}")
    heartbeats = [decode_heartbeat(line) for line in rest if line]
    return Archive(data, hashlib.sha256(data).hexdigest(), header, heartbeats)
