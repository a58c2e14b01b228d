"""Audit a partition's log: ``verify_chain(bucket, partition) -> ChainReport``.

Each commit stores the SHA-256 of the previous commit's bytes, its own
sequence number and its first notification id, so a change to any commit
that has a successor, a removed commit and an inserted one all show:

``missing``   a sequence number is absent (a gap in the names), or an object
              holds a later commit than its name says (later ones renamed down)
``inserted``  an object holds an earlier commit than its name says (later ones
              renamed up to make room), a commit's hash names the commit two
              before it, or an object that is not a commit sits in the partition
``edited``    an object is not a commit, or its successor's hash does not
              match its bytes

What a hash chain cannot show: a change to the last commit, or the last
commits removed (nothing after them records their hashes). The audit checks
those against the commit and hash that the views' position.json recorded
(``projections.audit.check_anchor``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from storage.bucket import Bucket
from storage.eventstore.commits import commit_name, decode_commit, seq_of, sha256_hex
from storage.eventstore.log import io_workers_for, read_many

__all__ = ["ChainReport", "verify_chain"]

Problem = Literal["edited", "missing", "inserted"]


class ChainReport(msgspec.Struct, frozen=True):
    """The verdict on one partition's log."""

    ok: bool
    commits: int
    """How many commits were checked (all of them when ``ok``)."""
    first_bad_seq: int | None = None
    problem: Problem | None = None
    message: str = ""


def verify_chain(bucket: Bucket, partition_prefix: str) -> ChainReport:
    """Read every commit under ``partition_prefix`` in order and check each link."""
    prefix = partition_prefix
    names, strays = [], []
    for name in bucket.list(prefix):
        if "/" in name[len(prefix) :]:
            continue  # snapshots/, tracking/: logs of their own
        (names if seq_of(prefix, name) is not None else strays).append(name)

    def bad(seq: int, problem: Problem, message: str) -> ChainReport:
        return ChainReport(False, seq - 1, seq, problem, f"{prefix}: {message}")

    prev_sha = before_prev_sha = ""
    next_id = 1
    for expected, (name, data) in enumerate(
        zip(names, read_many(bucket, names, workers=io_workers_for(bucket)), strict=True), start=1
    ):
        seq = seq_of(prefix, name)
        if seq != expected:
            return bad(expected, "missing", f"commit {commit_name('', expected)} is missing "
                                            f"(the next object is {name})")
        try:
            commit = decode_commit(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return bad(seq, "edited", f"{name} is not a commit object ({exc})")
        if commit.seq > seq:
            return bad(seq, "missing", f"{name} holds commit {commit.seq}: commits {seq}..{commit.seq - 1} "
                                       "were removed and later ones renamed")
        if commit.seq < seq:
            return bad(commit.seq, "inserted", f"{name} holds commit {commit.seq}: an object was inserted "
                                               f"at {commit.seq} and later ones renamed up")
        if commit.prev_sha256 != prev_sha:
            if seq > 1 and commit.prev_sha256 == before_prev_sha:
                return bad(seq - 1, "inserted", f"commit {seq - 1} was inserted: commit {seq} follows "
                                                f"commit {seq - 2} directly (by its hash)")
            return bad(seq - 1, "edited", f"commit {seq - 1} was changed after commit {seq} was written "
                                          "(its bytes no longer match the hash commit "
                                          f"{seq} recorded)")
        if commit.first_id != next_id:
            return bad(seq, "edited", f"commit {seq} starts at notification {commit.first_id}, "
                                      f"expected {next_id}")
        before_prev_sha, prev_sha = prev_sha, sha256_hex(data)
        next_id += len(commit.events)

    if strays:
        after = sum(1 for name in names if name < strays[0])
        return bad(after + 1, "inserted", f"{strays[0]} is not a commit object name "
                                          f"({len(strays)} such object(s) in the partition)")
    return ChainReport(True, len(names), None, None, f"{prefix}: {len(names)} commits, chain intact")
