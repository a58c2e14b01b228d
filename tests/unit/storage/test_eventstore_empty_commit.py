"""An empty last commit (a power loss on a bucket written without fsync) is read as absent and replaced
by the next append; an empty commit with a successor, or a truncated one, is refused (issue 12, D5).

Two ``PartitionLog`` objects on one partition stand for two processes.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import DataError, StoredEvent

from projections.partition import TrackingView
from storage import Bucket
from storage.eventstore import verify_chain
from storage.eventstore.commits import ChainBroken, commit_name, decode_commit, sha256_hex
from storage.eventstore.log import PartitionLog
from storage.layout import position
from storage.local import LocalBucket
from storage.memory import MemoryBucket

PARTITION = "platform"
PREFIX = "platform/events/"


@pytest.fixture(params=["local-no-fsync", "memory"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    return LocalBucket(tmp_path, fsync=False) if request.param == "local-no-fsync" else MemoryBucket()


def event(i: int) -> StoredEvent:
    return StoredEvent(uuid.uuid4(), 1, "tests:Thing.Happened", f'{{"i":{i}}}'.encode())


def write_log(bucket: Bucket, commits: int) -> None:
    log = PartitionLog(bucket, PREFIX)
    for i in range(commits):
        log.append([event(i)])


def lose(bucket: Bucket, seq: int, keep: int = 0) -> bytes:
    """What a power loss leaves of commit ``seq`` without fsync: its first ``keep`` bytes (none: empty)."""
    name = commit_name(PREFIX, seq)
    data = bucket.read(name)
    bucket.write(name, data[:keep])
    return data[:keep]


@pytest.mark.parametrize("read_workers", [1, 4])  # 4: the remote path, listing and reading several at once
def test_an_empty_last_commit_is_read_as_absent_and_replaced_by_the_next_append(
    bucket: Bucket, read_workers: int
) -> None:
    write_log(bucket, 6)
    lose(bucket, 6)
    reader = PartitionLog(bucket, PREFIX, read_workers=read_workers)
    writer = PartitionLog(bucket, PREFIX, read_workers=read_workers)

    assert reader.max_notification_id() == 5 and reader.index.tail_seq == 5
    assert [n.id for n in reader.select_notifications(1, 10)] == [1, 2, 3, 4, 5]
    assert verify_chain(bucket, PREFIX).ok and verify_chain(bucket, PREFIX).commits == 5

    assert writer.append([event(99)]) == [6]

    replaced = bucket.read(commit_name(PREFIX, 6))
    assert decode_commit(replaced).prev_sha256 == sha256_hex(bucket.read(commit_name(PREFIX, 5)))
    assert reader.max_notification_id() == 6  # the reader takes the replacement in
    assert reader.append([event(100)]) == [7]
    report = verify_chain(bucket, PREFIX)
    assert report.ok and report.commits == 7


def test_two_writers_meeting_one_empty_commit_both_land_once(bucket: Bucket) -> None:
    write_log(bucket, 3)
    lose(bucket, 3)
    first, second = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    assert first.max_notification_id() == second.max_notification_id() == 2

    assert first.append([event(1)]) == [3]
    assert second.append([event(2)]) == [4]  # met the replacement, not the empty object: next number
    assert verify_chain(bucket, PREFIX).ok and verify_chain(bucket, PREFIX).commits == 4


def test_a_writer_that_loses_the_replacement_race_reads_the_winner(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both saw the commit empty; the other replaced it between our create and our write: our
    generation-matched write fails, and we go on after theirs. (Writers that do not take the bucket's
    lock, as on GCS or an older release: on a folder, locking writers never race.)"""
    monkeypatch.setattr(bucket, "exclusive", lambda key: contextlib.nullcontext(False))
    write_log(bucket, 3)
    lose(bucket, 3)
    slow, fast = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    slow.max_notification_id()
    real_read = slow._read
    raced = []

    def read(name: str) -> bytes:
        data = real_read(name)
        if name == commit_name(PREFIX, 3) and not data and not raced:
            raced.append(fast.append([event(7)]))  # lands after our read, before our replacement
        return data

    monkeypatch.setattr(slow, "_read", read)
    assert slow.append([event(8)]) == [4]
    assert raced == [[3]]
    assert verify_chain(bucket, PREFIX).ok and verify_chain(bucket, PREFIX).commits == 4


def test_an_empty_commit_with_a_successor_is_refused(bucket: Bucket) -> None:
    write_log(bucket, 4)
    lose(bucket, 3)
    log = PartitionLog(bucket, PREFIX)
    with pytest.raises(DataError, match=r"000000000003\.json is empty but commit 4 follows it"):
        log.max_notification_id()
    with pytest.raises(DataError):
        PartitionLog(bucket, PREFIX).append([event(9)])
    assert bucket.read(commit_name(PREFIX, 3)) == b""
    assert not bucket.exists(commit_name(PREFIX, 5))
    report = verify_chain(bucket, PREFIX)
    assert (report.problem, report.first_bad_seq) == ("invalid", 3)


def test_a_truncated_last_commit_is_refused_not_replaced(bucket: Bucket) -> None:
    """Not empty: it may have held acknowledged events, or be a tamper. Never skipped nor overwritten."""
    write_log(bucket, 3)
    left = lose(bucket, 3, keep=20)
    with pytest.raises(DataError):
        PartitionLog(bucket, PREFIX).max_notification_id()
    with pytest.raises(DataError):
        PartitionLog(bucket, PREFIX).append([event(9)])
    assert bucket.read(commit_name(PREFIX, 3)) == left
    report = verify_chain(bucket, PREFIX)
    assert (report.problem, report.first_bad_seq) == ("invalid", 3)


def test_an_emptied_commit_the_views_were_made_from_is_named_missing_not_replaced(bucket: Bucket) -> None:
    """Emptying a projected (seen, acknowledged) last commit is a removed tail: the anchor names it."""
    write_log(bucket, 3)
    sha = sha256_hex(bucket.read(commit_name(PREFIX, 3)))
    bucket.write(position(PARTITION), msgspec.json.encode(TrackingView(3, PARTITION, 3, sha)))
    lose(bucket, 3)

    with pytest.raises(ChainBroken) as raised:
        PartitionLog(bucket, PREFIX).append([event(9)])
    assert (raised.value.seq, raised.value.problem) == (3, "missing")
    assert bucket.read(commit_name(PREFIX, 3)) == b""
