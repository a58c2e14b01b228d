"""A broken chain is never served nor extended; a batch stored by another writer is refused (issue 12).

Two ``PartitionLog`` objects (or two bucket objects) on one partition stand for two processes.
The logs here are unsigned (``Ledger.unsigned``), as every log written before signed commits: the
hash chain and the anchor hold them alone. Signed logs: ``test_eventstore_signing.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from projections.partition import TrackingView
from storage import Bucket
from storage.eventstore import BucketApplicationRecorder, BucketProcessRecorder, verify_chain
from storage.eventstore import log as log_module
from storage.eventstore.commits import (
    ChainBroken,
    Commit,
    commit_name,
    decode_commit,
    encode_commit,
    pack_segment,
    segment_name,
    sha256_hex,
    unpack_segment,
)
from storage.eventstore.ledger import Ledger
from storage.eventstore.log import PartitionLog, serving_broken_chains
from storage.layout import position
from storage.local import LocalBucket
from storage.memory import MemoryBucket

PARTITION = "platform"
PREFIX = "platform/events/"


@pytest.fixture(autouse=True)
def _unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "ledger_for", lambda bucket, env=None: Ledger.unsigned(bucket))


def event(version: int = 1, state: bytes = b'{"a":1}') -> StoredEvent:
    return StoredEvent(uuid.uuid4(), version, "tests:Thing.Happened", state)


def write_log(bucket: Bucket, commits: int) -> PartitionLog:
    log = PartitionLog(bucket, PREFIX)
    for i in range(commits):
        log.append([event(state=f'{{"i":"n{i:04d}"}}'.encode())])
    return log


def tamper(bucket: Bucket, name: str, old: bytes, new: bytes) -> None:
    """Rewrite an object in place, as anyone with write access to the bucket can (a segment is
    inflated, edited and packed again, as a forger would)."""
    data = bucket.read(name)
    segment = "/segments/" in name
    if segment:
        data = b"".join(line + b"\n" for line in unpack_segment(data))
    assert old in data
    data = data.replace(old, new, 1)
    bucket.write(name, pack_segment(unpack_segment(data)) if segment else data)


def anchor(bucket: Bucket, seq: int) -> None:
    """position.json as the projector writes it, made from commit ``seq`` as it is now."""
    sha = sha256_hex(bucket.read(commit_name(PREFIX, seq)))
    bucket.write(position(PARTITION), msgspec.json.encode(TrackingView(seq, PARTITION, seq, sha)))


def test_a_reader_raises_on_a_broken_link_and_serves_nothing_past_it(bucket: Bucket) -> None:
    write_log(bucket, 5)
    tamper(bucket, commit_name(PREFIX, 3), b"n0002", b"n9999")

    reader = PartitionLog(bucket, PREFIX)

    for _ in range(2):  # every query, not only the first
        with pytest.raises(ChainBroken) as raised:
            reader.max_notification_id()
        assert (raised.value.partition, raised.value.seq, raised.value.problem) == (PREFIX, 3, "edited")
    assert reader.index.tail_seq == 3  # commits 4 and 5 were not taken in
    with pytest.raises(ChainBroken):
        reader.append([event()])
    assert not bucket.exists(commit_name(PREFIX, 6))


def test_a_fresh_writer_refuses_to_link_to_an_edited_last_commit(bucket: Bucket) -> None:
    write_log(bucket, 4)
    anchor(bucket, 4)
    tamper(bucket, commit_name(PREFIX, 4), b"n0003", b"n9999")  # D1: nothing after it vouches

    writer = PartitionLog(bucket, PREFIX)  # a fresh process: `tune admin user create`
    assert writer.max_notification_id() == 4  # served: nothing says it is broken until we link to it

    with pytest.raises(ChainBroken) as raised:
        writer.append([event()])
    assert (raised.value.seq, raised.value.problem) == (4, "edited")
    assert "000000000004.json" in str(raised.value)
    assert not bucket.exists(commit_name(PREFIX, 5))
    assert verify_chain(bucket, PREFIX).ok  # the chain alone cannot see it: the anchor does


def test_a_fresh_writer_refuses_to_refill_a_removed_tail(bucket: Bucket) -> None:
    write_log(bucket, 5)
    anchor(bucket, 5)
    bucket.delete(commit_name(PREFIX, 5))

    with pytest.raises(ChainBroken) as raised:
        PartitionLog(bucket, PREFIX).append([event()])
    assert (raised.value.seq, raised.value.problem) == (5, "missing")
    assert not bucket.exists(commit_name(PREFIX, 5))


def test_an_anchor_behind_the_tail_is_checked_against_its_commit(bucket: Bucket) -> None:
    write_log(bucket, 5)
    anchor(bucket, 3)
    PartitionLog(bucket, PREFIX).append([event()])  # intact: appends
    bucket.write(position(PARTITION), msgspec.json.encode(TrackingView(3, PARTITION, 3, "0" * 64)))

    with pytest.raises(ChainBroken) as raised:
        PartitionLog(bucket, PREFIX).append([event()])
    assert (raised.value.seq, raised.value.problem) == (3, "edited")


def test_an_anchor_ahead_of_a_stale_writer_is_caught_up_with_first(bucket: Bucket) -> None:
    stale = PartitionLog(bucket, PREFIX)
    stale.max_notification_id()
    write_log(bucket, 3)
    anchor(bucket, 3)

    assert stale.append([event()]) == [4]


def test_a_writer_does_not_hide_a_commit_edited_after_it_read_it(bucket: Bucket) -> None:
    writer = write_log(bucket, 4)
    tamper(bucket, commit_name(PREFIX, 4), b"n0003", b"n9999")

    writer.append([event()])  # links to commit 4 as it wrote it: the edit shows

    with pytest.raises(ChainBroken) as raised:
        PartitionLog(bucket, PREFIX).max_notification_id()
    assert raised.value.seq == 4
    report = verify_chain(bucket, PREFIX)
    assert (report.ok, report.first_bad_seq) == (False, 4)


def test_a_writer_that_meets_a_forged_commit_refuses_and_names_it(bucket: Bucket) -> None:
    writer = write_log(bucket, 2)
    forged = Commit(3, 3, "f" * 64, decode_commit(bucket.read(commit_name(PREFIX, 2))).events)
    bucket.create(commit_name(PREFIX, 3), encode_commit(forged))

    with pytest.raises(ChainBroken) as raised:
        writer.append([event()])  # the name is taken: it reads the winner, whose link is wrong
    assert raised.value.seq == 2
    assert "000000000003.json" in str(raised.value)
    assert not bucket.exists(commit_name(PREFIX, 4))


@pytest.mark.parametrize("read_workers", [1, 4], ids=["folder", "remote"])
def test_a_segment_reader_and_a_fresh_reader_agree_on_an_edited_block_end(
    monkeypatch: pytest.MonkeyPatch, read_workers: int
) -> None:
    """The segment's last commit and its object edited alike: the commit after the block exposes both."""
    monkeypatch.setattr(log_module, "SEGMENT_COMMITS", 4)
    bucket = MemoryBucket()
    write_log(bucket, 6)
    assert bucket.exists(segment_name(PREFIX, 4))
    tamper(bucket, commit_name(PREFIX, 4), b"n0003", b"n9999")
    tamper(bucket, segment_name(PREFIX, 4), b"n0003", b"n9999")

    with pytest.raises(ChainBroken) as from_segment:
        PartitionLog(bucket, PREFIX, read_workers=read_workers).max_notification_id()
    bucket.delete(segment_name(PREFIX, 4))
    with pytest.raises(ChainBroken) as from_objects:
        PartitionLog(bucket, PREFIX, read_workers=read_workers).max_notification_id()
    assert from_segment.value.seq == from_objects.value.seq == 4


def test_a_segment_reader_never_serves_an_edited_middle_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An object edited inside a sealed block: the segment (pinned by hashes to the block's last object)
    serves the history the chain records; reading the objects refuses. Neither serves the edit."""
    monkeypatch.setattr(log_module, "SEGMENT_COMMITS", 4)
    bucket = MemoryBucket()
    write_log(bucket, 5)
    tamper(bucket, commit_name(PREFIX, 2), b"n0001", b"n9999")

    cached = PartitionLog(bucket, PREFIX, read_workers=1)
    assert b"n9999" not in b"".join(n.state for n in cached.select_notifications(None, 10))
    bucket.delete(segment_name(PREFIX, 4))
    with pytest.raises(ChainBroken):
        PartitionLog(bucket, PREFIX, read_workers=1).max_notification_id()


@pytest.mark.parametrize("recorder", [BucketApplicationRecorder, BucketProcessRecorder])
def test_a_batch_another_writer_stored_byte_for_byte_is_refused(tmp_path: Path, recorder: type) -> None:
    """D4: the domain stamps events with the caller's time, so a redelivered command repeats its bytes."""
    r1 = recorder(LocalBucket(tmp_path), "p/events/")
    r2 = recorder(LocalBucket(tmp_path), "p/events/")
    r2.max_notification_id()
    e = StoredEvent(uuid.uuid4(), 1, "t", b"x")
    tracking = {"tracking": Tracking("upstream", 7)} if recorder is BucketProcessRecorder else {}

    assert r1.insert_events([e], **tracking) == [1]
    with pytest.raises(IntegrityError):
        r2.insert_events([e], **tracking)
    assert r2.max_notification_id() == 1


def test_tracking_alone_stored_by_another_writer_is_refused(tmp_path: Path) -> None:
    r1 = BucketProcessRecorder(LocalBucket(tmp_path), "p/events/")
    r2 = BucketProcessRecorder(LocalBucket(tmp_path), "p/events/")
    r2.max_tracking_id("upstream")
    r1.insert_tracking(Tracking("upstream", 3))
    with pytest.raises(IntegrityError):
        r2.insert_tracking(Tracking("upstream", 3))


def test_commits_without_a_nonce_still_read() -> None:
    bucket = MemoryBucket()
    old = Commit(1, 1, "", decode_commit(encode_commit(Commit(1, 1, "", []))).events)
    data = encode_commit(old)
    assert b"nonce" not in data
    bucket.create(commit_name(PREFIX, 1), data)
    log = PartitionLog(bucket, PREFIX)
    assert log.append([event()]) == [1]  # an empty commit 1, then ours
    assert decode_commit(bucket.read(commit_name(PREFIX, 2))).nonce


def test_an_audit_reads_past_a_broken_link_only_inside_its_block(bucket: Bucket) -> None:
    write_log(bucket, 5)
    tamper(bucket, commit_name(PREFIX, 3), b"n0002", b"n9999")
    log = PartitionLog(bucket, PREFIX)

    with serving_broken_chains():
        assert log.max_notification_id() == 5  # the audit replays it all, to show what the edit did
    with pytest.raises(ChainBroken) as raised:
        log.select_notifications(None, 10)  # the log keeps the break
    assert raised.value.seq == 3
    with pytest.raises(ChainBroken):
        log.append([event()])
    assert not bucket.exists(commit_name(PREFIX, 6))
