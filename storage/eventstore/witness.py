"""Witnessed heads: each partition's head, signed, in a bucket outside the event bucket's write path.

``TUNE_WITNESS`` names the witness bucket (``file:///...`` or ``gs://...``, its own credentials;
in production a bucket with a retention policy, so a head once written can be neither replaced
nor deleted). After its commits a writer publishes the head it reached,
``witness/<partition>/<seq:012d>.json`` (``storage.layout.witness_head``): partition, seq, the
SHA-256 of that commit's bytes, the writer's key id and its signature over them
(``signing.head_message``). Objects are created only: a head at a seq already witnessed is never
replaced, so a rewritten log cannot rewrite what the witness saw.

A writer publishes at least every ``every_commits`` commits, and a head left unpublished is
published ``every_s`` seconds after its commit (a timer): the default (every commit) suits the
embedded process. The audit compares a log with every head the witness holds
(``projections.audit.check_witness``); a writer, before its first append, with the latest heads
around its tail (``PartitionLog``): a log behind the witness was rolled back, a commit whose hash
is not the witnessed one was forged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec

from storage.bucket import AlreadyExists, Bucket
from storage.eventstore.signing import SigningKey, head_message
from storage.layout import witness_head, witness_prefix

__all__ = ["Witness", "WitnessedHead", "partition_of"]

_log = logging.getLogger(__name__)


class WitnessedHead(msgspec.Struct, frozen=True):
    partition: str
    seq: int
    sha256: str
    key_id: str = ""
    signature: str = ""
    """The writer's, over ``signing.head_message(partition, seq, sha256)``."""
    at: str = ""


def partition_of(prefix: str) -> str | None:
    """The partition whose events lie under ``prefix`` (``platform/events/`` -> ``platform``); None
    for another log (snapshots, tracking records): only events are witnessed."""
    partition = prefix.removesuffix("/events/")
    return partition if partition != prefix and "/events/" not in partition + "/" else None


class Witness:
    """The witness bucket, and how often a writer publishes to it."""

    def __init__(self, bucket: Bucket, *, every_commits: int = 1, every_s: float = 60.0) -> None:
        if every_commits < 1 or every_s <= 0:
            raise ValueError("a witness publishes every >= 1 commits, every > 0 seconds")
        self.bucket = bucket
        self.every_commits = every_commits
        self.every_s = every_s

    def __repr__(self) -> str:
        return f"Witness({self.bucket.url!r}, every {self.every_commits} commits or {self.every_s} s)"

    def publish(self, partition: str, seq: int, sha256: str, signer: SigningKey | None) -> bool:
        """Create the head ``(partition, seq, sha256)``; False if the witness already held another."""
        signature = signer.sign(head_message(partition, seq, sha256)) if signer else ""
        head = WitnessedHead(partition, seq, sha256, signer.key_id if signer else "", signature,
                             datetime.now(UTC).isoformat())
        name = witness_head(partition, seq)
        try:
            self.bucket.create(name, msgspec.json.encode(head))
        except AlreadyExists:
            held = self.read(partition, seq)
            if held.sha256 != sha256:
                _log.error("%s holds commit %d with SHA-256 %s, not %s: the log was rewritten after the "
                           "witness saw it; run `tune admin audit`", name, seq, held.sha256, sha256)
                return False
        return True

    def seqs(self, partition: str, *, from_seq: int = 1) -> Iterator[int]:
        """The witnessed seqs of ``partition`` from ``from_seq`` on, in order."""
        prefix = witness_prefix(partition)
        start = witness_head(partition, max(1, from_seq)) if from_seq > 1 else None
        for name in self.bucket.list(prefix, start_offset=start):
            rest = name[len(prefix):].removesuffix(".json")
            if rest.isdigit() and len(rest) == 12:
                yield int(rest)

    def read(self, partition: str, seq: int) -> WitnessedHead:
        """The head witnessed at ``seq`` (ObjectNotFound; msgspec errors if it is no head)."""
        return msgspec.json.decode(self.bucket.read(witness_head(partition, seq)), type=WitnessedHead)
