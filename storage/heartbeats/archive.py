"""The raw heartbeat archive: one object per user per ledger batch, what its usage was metered from.

Object (``storage.layout.heartbeat_batch``:
``users/<uid>/heartbeats/<yyyymmdd>/<hhmmssffffff>.<digest>.jsonl``, by the ledger's receive time
in UTC; created once, before the commit that meters it; its name and sha256
are in every ``Job.UsageMetered`` event of that commit), JSON lines::

    {"format":"tune.heartbeats.v2","received":...,"clock_bound_ms":...,"gpu_tolerance_ms":...,
     "attempts":[{"job_id":...,"attempt":...,"bound_count":...,"refused":[...]},...]}
                                                             the header: how the ledger metered them
    {"user_id":...,"job_id":...,"seq":...,...,"signature":...}   each signed heartbeat of the attempts
    ...                                                      in the batch: attempt by attempt, in the
                                                             header's order, each in arrival order

The heartbeats are every one of each attempt the batch held whose signature verified, repeats and
late ones included, each as ``encode_heartbeat`` writes it: exactly the fields its signature covers,
so the audit can verify it again with the heartbeat key. The header holds what else the rules of
``domain.cumulative`` need to give the same result again: the ledger's receive time, its clock
bound and GPU tolerance, and per attempt the GPU count GPU time was bounded by and the seqs the
ledger refused to price (``refused``: never metered). An attempt's heartbeats are those of its
job and attempt; a heartbeat of no attempt the header lists belongs to none.

Format v1 (``tune.heartbeats.v1``, written by earlier releases; ``storage.layout.heartbeat_archive``:
``users/<uid>/heartbeats/<job>/<attempt>/<first>-<last>.<digest>.jsonl``) held one job attempt per
object: its header had ``bound_count`` and ``refused`` at the top and named no attempt (the object's
name does). ``decode_archive`` reads both; its v1 header lists one attempt with ``job_id`` and
``attempt`` None: every heartbeat of the object is meant to be of the attempt named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import msgspec

from storage.heartbeats.heartbeat import Heartbeat, decode_heartbeat, encode_heartbeat

__all__ = [
    "ARCHIVE_FORMAT",
    "ARCHIVE_FORMAT_V1",
    "Archive",
    "ArchiveHeader",
    "ArchivedAttempt",
    "decode_archive",
    "encode_archive",
]

ARCHIVE_FORMAT = "tune.heartbeats.v2"
ARCHIVE_FORMAT_V1 = "tune.heartbeats.v1"

_Count = Annotated[int, msgspec.Meta(ge=0)]
_At = Annotated[datetime, msgspec.Meta(tz=True)]


class ArchivedAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One job attempt of an archive: how its heartbeats were metered (module docstring)."""

    job_id: str | None
    """None only in a v1 archive (the object's name says whose heartbeats it holds)."""
    attempt: _Count | None
    bound_count: _Count
    refused: list[int] = []


class ArchiveHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The first line of an archive (module docstring)."""

    format: str = ARCHIVE_FORMAT
    received: _At
    clock_bound_ms: _Count
    gpu_tolerance_ms: _Count
    attempts: list[ArchivedAttempt]

    def attempt(self, job_id: str, attempt: int) -> ArchivedAttempt | None:
        """The entry of ``attempt`` of ``job_id`` (a v1 archive's only one, whatever is asked), or None."""
        for entry in self.attempts:
            if entry.job_id is None or (entry.job_id, entry.attempt) == (job_id, attempt):
                return entry
        return None


class Archive(msgspec.Struct, frozen=True):
    """An archive object's bytes, their sha256, and what they hold."""

    data: bytes
    sha256: str
    header: ArchiveHeader
    heartbeats: list[Heartbeat]


class _HeaderV1(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    received: _At
    clock_bound_ms: _Count
    gpu_tolerance_ms: _Count
    bound_count: _Count
    refused: list[int] = []


class _Format(msgspec.Struct):
    format: str


_format_decoder = msgspec.json.Decoder(_Format)
_header_decoder = msgspec.json.Decoder(ArchiveHeader)
_header_v1_decoder = msgspec.json.Decoder(_HeaderV1)


def encode_archive(header: ArchiveHeader, heartbeats: Sequence[Heartbeat]) -> Archive:
    """The archive object of ``heartbeats`` (the attempts' of ``header``, in its order) under ``header``."""
    lines = [msgspec.json.encode(header), *(encode_heartbeat(h) for h in heartbeats)]
    data = b"\n".join(lines) + b"\n"
    return Archive(data, hashlib.sha256(data).hexdigest(), header, list(heartbeats))


def decode_archive(data: bytes) -> Archive:
    """What an archive object (v2 or v1) holds; ``msgspec.DecodeError`` (or ValueError) if it is not one."""
    first, *rest = data.splitlines() or [b""]
    form = _format_decoder.decode(first).format
    if form == ARCHIVE_FORMAT:
        header = _header_decoder.decode(first)
    elif form == ARCHIVE_FORMAT_V1:
        old = _header_v1_decoder.decode(first)
        header = ArchiveHeader(
            format=old.format,
            received=old.received,
            clock_bound_ms=old.clock_bound_ms,
            gpu_tolerance_ms=old.gpu_tolerance_ms,
            attempts=[
                ArchivedAttempt(job_id=None, attempt=None, bound_count=old.bound_count, refused=old.refused)
            ],
        )
    else:
        raise ValueError(f"not a heartbeat archive of format {ARCHIVE_FORMAT}: {form!r:.80}")
    heartbeats = [decode_heartbeat(line) for line in rest if line]
    return Archive(data, hashlib.sha256(data).hexdigest(), header, heartbeats)
