"""PartitionLog: the commit log of one partition, as two processes sharing a bucket see it.

Two ``PartitionLog`` objects on the same bucket and prefix stand for two
processes: each has its own cache and only the bucket between them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent, Tracking

from storage import AlreadyExists, Bucket, BucketError, ObjectStat
from storage.eventstore import commits as commits_module
from storage.eventstore import log as log_module
from storage.eventstore.commits import commit_name, pack_segment, segment_name, unpack_segment
from storage.eventstore.log import PartitionLog
from storage.local import LocalBucket
from storage.memory import MemoryBucket
from tests.buckets import ForwardingBucket

PREFIX = "users/u1/events/"


def event(originator_id: uuid.UUID | str, version: int, state: bytes = b'{"a":1}') -> StoredEvent:
    return StoredEvent(originator_id, version, "tests:Thing.Happened", state)


class Wrapped(ForwardingBucket):
    """Our own Bucket interface around another, counting reads and failing creates on demand."""

    def __init__(self, inner: Bucket) -> None:
        super().__init__(inner)
        self.reads: list[str] = []
        self.fail_creates: list[BaseException] = []  # raised (in order) after or instead of a create
        self.lose_response = False

    def read(self, name: str) -> bytes:
        self.reads.append(name)
        return super().read(name)

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        if self.fail_creates:
            raise self.fail_creates.pop(0)
        stat = super().write(name, data, if_generation_match=if_generation_match)
        if self.lose_response:  # the write happened, the client retried and found its own object
            self.lose_response = False
            raise AlreadyExists(name)
        return stat


def test_each_process_sees_the_others_commits_with_contiguous_ids(bucket: Bucket) -> None:
    first, second = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    thing = uuid.uuid4()

    assert first.append([event(thing, 1), event(thing, 2)]) == [1, 2]
    assert [e.originator_version for e in second.select_events(thing)] == [1, 2]
    assert second.append([event(thing, 3)]) == [3]

    assert [n.id for n in first.select_notifications(None, 10)] == [1, 2, 3]
    assert first.select_events(thing, desc=True, limit=1)[0].originator_version == 3
    assert first.max_notification_id() == second.max_notification_id() == 3


def test_a_writer_that_loses_the_race_takes_the_next_number() -> None:
    bucket = MemoryBucket()
    fast, slow = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    slow.max_notification_id()  # slow has looked: it believes the log is empty

    fast.append([event(uuid.uuid4(), 1)])
    ids = slow.append([event(uuid.uuid4(), 1), event(uuid.uuid4(), 1)])

    assert ids == [2, 3]
    assert list(bucket.list(PREFIX)) == [commit_name(PREFIX, 1), commit_name(PREFIX, 2)]


def test_a_writer_that_loses_the_race_on_the_same_version_gets_integrity_error() -> None:
    bucket = MemoryBucket()
    fast, slow = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    thing = uuid.uuid4()
    slow.max_notification_id()

    fast.append([event(thing, 1, b"fast")])
    with pytest.raises(IntegrityError):
        slow.append([event(thing, 1, b"slow"), event(uuid.uuid4(), 1)])

    assert [e.state for e in slow.select_events(thing)] == [b"fast"]
    assert slow.max_notification_id() == 1


def test_pinned_reads_look_once_and_still_meet_a_conflicting_commit_on_append() -> None:
    bucket = MemoryBucket()
    ours, other = PartitionLog(Wrapped(bucket), PREFIX), PartitionLog(bucket, PREFIX)
    thing = uuid.uuid4()
    other.append([event(thing, 1)])

    with ours.pinned():
        looked = len(ours.bucket.reads)
        assert [e.originator_version for e in ours.select_events(thing)] == [1]  # the look on entry
        other.append([event(thing, 2, b"other")])
        for _ in range(3):
            assert [e.originator_version for e in ours.select_events(thing)] == [1]
        assert ours.max_notification_id() == 1
        assert len(ours.bucket.reads) == looked  # no probe per read
        with pytest.raises(IntegrityError):
            ours.append([event(thing, 2, b"ours")])  # the stale read cannot overwrite
        assert ours.append([event(uuid.uuid4(), 1)]) == [3]  # and its own appends count at once
        assert ours.max_notification_id() == 3

    assert [e.state for e in ours.select_events(thing)][-1] == b"other"


def test_a_pin_is_per_thread() -> None:
    bucket = MemoryBucket()
    ours, other = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    seen: list[int | None] = []
    with ours.pinned():
        other.append([event(uuid.uuid4(), 1)])
        reader = threading.Thread(target=lambda: seen.append(ours.max_notification_id()))
        reader.start()
        reader.join()
    assert seen == [1]  # another thread still looks for new commits


def test_tracking_must_move_forward_across_processes() -> None:
    bucket = MemoryBucket()
    first, second = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    second.max_notification_id()

    first.append([event(uuid.uuid4(), 1)], Tracking("upstream", 5))
    with pytest.raises(IntegrityError):
        second.append([event(uuid.uuid4(), 1)], Tracking("upstream", 5))
    second.append([], Tracking("upstream", 6))

    assert first.max_tracking_id("upstream") == 6
    assert first.max_notification_id() == 1  # the refused batch left nothing behind


def test_a_batch_that_repeats_a_version_is_refused_before_any_write() -> None:
    bucket = MemoryBucket()
    thing = uuid.uuid4()
    with pytest.raises(IntegrityError):
        PartitionLog(bucket, PREFIX).append([event(thing, 1), event(thing, 1)])
    assert list(bucket.list("")) == []


def test_commits_are_readable_json_chained_by_hash() -> None:
    bucket = MemoryBucket()
    log = PartitionLog(bucket, PREFIX)
    thing = uuid.uuid4()
    log.append([event(thing, 1, b'{"amount":"1.10"}')])
    log.append([event("text-id", 7, b"\xff\x00binary")], Tracking("upstream", 3))

    first, second = (bucket.read(commit_name(PREFIX, seq)) for seq in (1, 2))
    one, two = json.loads(first), json.loads(second)

    assert one["seq"] == 1 and one["first_id"] == 1 and one["prev_sha256"] == ""
    assert one["events"][0] == {
        "originator_id": str(thing),
        "originator_version": 1,
        "topic": "tests:Thing.Happened",
        "state": '{"amount":"1.10"}',
    }
    assert two["prev_sha256"] == hashlib.sha256(first).hexdigest()
    assert two["first_id"] == 2 and two["tracking"] == {"application_name": "upstream", "notification_id": 3}
    fresh = PartitionLog(bucket, PREFIX)
    assert fresh.select_events(thing)[0].originator_id == thing
    assert fresh.select_events("text-id") == [
        StoredEvent("text-id", 7, "tests:Thing.Happened", b"\xff\x00binary")
    ]


def test_our_own_write_reported_lost_is_still_ours() -> None:
    bucket = Wrapped(MemoryBucket())
    bucket.lose_response = True

    assert PartitionLog(bucket, PREFIX).append([event(uuid.uuid4(), 1)]) == [1]
    assert PartitionLog(bucket, PREFIX).max_notification_id() == 1


def test_bucket_failures_surface_as_operational_errors_and_record_nothing() -> None:
    bucket = Wrapped(MemoryBucket())
    bucket.fail_creates.append(BucketError("503 from the store"))
    log = PartitionLog(bucket, PREFIX)

    with pytest.raises(OperationalError, match="503"):
        log.append([event(uuid.uuid4(), 1)])
    assert log.append([event(uuid.uuid4(), 1)]) == [1]


def test_an_oversized_batch_is_refused() -> None:
    log = PartitionLog(MemoryBucket(), PREFIX)
    with pytest.raises(DataError, match="save fewer events"):
        log.append([event(uuid.uuid4(), 1, b"x" * (log_module.MAX_COMMIT_BYTES + 1))])


def test_a_fresh_process_reads_whole_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "SEGMENT_COMMITS", 4)
    bucket = Wrapped(MemoryBucket())
    writer = PartitionLog(bucket, PREFIX)
    things = [uuid.uuid4() for _ in range(10)]
    for thing in things:
        writer.append([event(thing, 1)])

    assert list(bucket.list(f"{PREFIX}segments/")) == [segment_name(PREFIX, 4), segment_name(PREFIX, 8)]
    bucket.delete_prefix(f"{PREFIX}indexes/")  # a log written before log indexes (see test_eventstore_warm)
    bucket.reads.clear()
    local = PartitionLog(bucket, PREFIX, read_workers=1)  # as on a folder: probe for each next name

    assert [n.originator_id for n in local.select_notifications(None, 100)] == things
    assert bucket.reads == [  # each segment is checked against its last commit object
        segment_name(PREFIX, 4),
        commit_name(PREFIX, 4),
        segment_name(PREFIX, 8),
        commit_name(PREFIX, 8),
        segment_name(PREFIX, 12),
        commit_name(PREFIX, 9),
        commit_name(PREFIX, 10),
        commit_name(PREFIX, 11),
    ]
    bucket.reads.clear()
    remote = PartitionLog(bucket, PREFIX, read_workers=4)  # as on GCS: list the segments, read them at once

    assert [n.originator_id for n in remote.select_notifications(None, 100)] == things
    assert set(bucket.reads[:4]) == {
        segment_name(PREFIX, 4),
        commit_name(PREFIX, 4),
        segment_name(PREFIX, 8),
        commit_name(PREFIX, 8),
    }
    assert bucket.reads[4:] == [commit_name(PREFIX, 9), commit_name(PREFIX, 10), commit_name(PREFIX, 11)]


@pytest.mark.parametrize("changed", [1, 3], ids=["inside", "last"])
def test_a_segment_that_differs_from_the_commits_is_ignored(
    monkeypatch: pytest.MonkeyPatch, changed: int
) -> None:
    monkeypatch.setattr(log_module, "SEGMENT_COMMITS", 4)
    bucket = MemoryBucket()
    writer = PartitionLog(bucket, PREFIX)
    things = [uuid.uuid4() for _ in range(5)]
    for thing in things:
        writer.append([event(thing, 1)])
    segment = bucket.read(segment_name(PREFIX, 4))
    forged = segment.replace(str(things[changed]).encode(), str(uuid.uuid4()).encode())
    bucket.delete(segment_name(PREFIX, 4))
    bucket.create(segment_name(PREFIX, 4), forged)

    reader = PartitionLog(bucket, PREFIX)

    assert [n.originator_id for n in reader.select_notifications(None, 100)] == things


def test_a_remote_reader_far_behind_lists_and_reads_several_at_once() -> None:
    bucket = Wrapped(MemoryBucket())
    writer = PartitionLog(bucket, PREFIX)
    reader = PartitionLog(bucket, PREFIX, read_workers=4)  # as on GCS: probe a few, then list and read
    things = [uuid.uuid4() for _ in range(12)]
    for thing in things[:4]:
        writer.append([event(thing, 1)])
    assert reader.max_notification_id() == 4  # four probes (fewer than it lists after), then a miss

    for thing in things[4:]:
        writer.append([event(thing, 1)])

    assert [n.originator_id for n in reader.select_notifications(None, 100)] == things
    assert bucket.reads.count(commit_name(PREFIX, 10)) == 1  # each commit is read once


class ShortListings(Wrapped):
    """A listing that shows only the next two names (as one made while commits are being created may)."""

    def __init__(self, inner: Bucket) -> None:
        super().__init__(inner)
        self.listings = 0

    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        if prefix == PREFIX:
            self.listings += 1
            return iter(list(super().list(prefix, start_offset=start_offset))[:2])
        return super().list(prefix, start_offset=start_offset)


def test_a_remote_reader_lists_again_only_after_as_many_probes_as_before() -> None:
    # with several writers a reader is often a few commits behind: listing after every commit once it had
    # probed a few (a LIST per commit, the dearest call on GCS) was most of what 8 writers cost
    bucket = ShortListings(MemoryBucket())
    writer = PartitionLog(bucket, PREFIX)
    things = [uuid.uuid4() for _ in range(2 * log_module._PROBES_BEFORE_LISTING + 4)]
    for thing in things:
        writer.append([event(thing, 1)])
    reader = PartitionLog(bucket, PREFIX, read_workers=4)

    assert [n.originator_id for n in reader.select_notifications(None, 100)] == things
    assert bucket.listings == 2


def test_a_writer_that_loses_the_race_backs_off_then_reads_only_the_commits_after_its_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = Wrapped(MemoryBucket())
    fast, slow = PartitionLog(bucket, PREFIX), PartitionLog(bucket, PREFIX)
    for thing in (uuid.uuid4(), uuid.uuid4()):
        fast.append([event(thing, 1)])
    slow.max_notification_id()  # slow has read commits 1 and 2
    for thing in (uuid.uuid4(), uuid.uuid4(), uuid.uuid4()):
        fast.append([event(thing, 1)])
    waits: list[float] = []
    monkeypatch.setattr(log_module.time, "sleep", waits.append)
    bucket.reads.clear()

    assert slow.append([event(uuid.uuid4(), 1)]) == [6]

    # lost commit 3: read it, waited (jitter, at most 2 creates' time), read the names after it by name
    # (never listing), a window of 4 at once on a remote bucket: 4 and 5, and the missing 6 and 7; won 6
    assert sorted(name for name in bucket.reads if name.startswith(PREFIX)) == [
        commit_name(PREFIX, seq) for seq in (3, 4, 5, 6, 7)]
    assert len(waits) == 1 and 0 <= waits[0] <= 0.25  # a random back-off, within its cap


def test_recorders_in_one_process_share_a_log_and_the_least_used_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(log_module, "MAX_SHARED_LOGS", 2)
    bucket = MemoryBucket()
    first = log_module.partition_log(bucket, "a/")

    assert log_module.partition_log(bucket, "a/") is first
    log_module.partition_log(bucket, "b/")
    log_module.partition_log(bucket, "c/")  # "a/" was asked for least recently: dropped
    again = log_module.partition_log(bucket, "a/")

    assert again is not first
    first.append([event(uuid.uuid4(), 1)])
    assert again.max_notification_id() == 1  # the dropped one still works; the new one reads its commit


def _count_in_child(bucket: Bucket, out: Any) -> None:
    out.put(PartitionLog(bucket, PREFIX, read_workers=2).max_notification_id())


def test_a_forked_child_reads_with_its_own_threads() -> None:
    bucket = MemoryBucket()
    writer = PartitionLog(bucket, PREFIX)
    for _ in range(10):
        writer.append([event(uuid.uuid4(), 1)])
    assert PartitionLog(bucket, PREFIX, read_workers=2).max_notification_id() == 10  # the parent's pool runs
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_count_in_child, args=(bucket, out), daemon=True)
    child.start()
    try:
        assert out.get(timeout=20) == 10  # not a hang on the parent's pool, whose threads it lacks
    finally:
        child.kill()
        child.join(timeout=10)


class CountingCreates(ForwardingBucket):
    """Counts the commit objects created."""

    def __init__(self, inner: Bucket) -> None:
        super().__init__(inner)
        self.creates = 0

    def create(self, name: str, data: bytes) -> ObjectStat:
        if name.startswith(PREFIX) and "/segments/" not in name:
            self.creates += 1
        return super().create(name, data)


def test_concurrent_saves_share_one_commit_and_a_conflicting_one_fails_alone() -> None:
    bucket = CountingCreates(MemoryBucket())
    log = PartitionLog(bucket, PREFIX)
    taken = uuid.uuid4()
    log.append([event(taken, 1)])
    batches = [[event(uuid.uuid4(), 1), event(uuid.uuid4(), 1)] for _ in range(7)] + [[event(taken, 1)]]
    results: dict[int, Any] = {}

    def save(i: int) -> None:
        try:
            results[i] = log.append(batches[i])
        except IntegrityError as exc:
            results[i] = exc

    with log._tail_lock:  # the tail is busy (a commit being written): the saves queue up meanwhile
        threads = [threading.Thread(target=save, args=(i,)) for i in range(len(batches))]
        for thread in threads:
            thread.start()
        while len(log._queue) < len(batches):
            threading.Event().wait(0.001)
    for thread in threads:
        thread.join()
    assert bucket.creates == 2  # the first save, then one commit for the seven that fit
    assert isinstance(results[7], IntegrityError)  # version 1 of `taken` is stored: that save alone fails
    ids = sorted(i for r in results.values() if isinstance(r, list) for i in r)
    assert ids == list(range(2, 16))  # contiguous, each save its own ids
    stored = PartitionLog(bucket.inner, PREFIX).select_notifications(1, 100)
    assert [(n.id, n.originator_id) for n in stored][1:] == [
        (i, e.originator_id) for i, e in zip(range(2, 16), [e for b in batches[:7] for e in b], strict=True)]


def _gzip_segment(commits: list[bytes]) -> bytes:
    """A segment as releases before Zstandard packed it."""
    return gzip.compress(b"".join(c + b"\n" for c in commits), compresslevel=6, mtime=0)


def test_segments_are_compressed_and_old_gzip_and_plain_ones_still_read() -> None:
    """A segment is Zstandard (the same commits pack to the same bytes, a fraction of their size); one
    written by an older release (gzip, or plain before compression) reads the same; a corrupt, truncated
    or overlong one is refused, not served."""
    commits = [b'{"seq": %d, "events": []}' % n for n in range(1, 200)]
    packed = pack_segment(commits)
    plain = b"".join(c + b"\n" for c in commits)
    assert packed[:4] == b"\x28\xb5\x2f\xfd"
    assert packed == pack_segment(commits) and len(packed) < len(plain) / 4
    assert unpack_segment(packed) == unpack_segment(plain) == commits
    assert unpack_segment(_gzip_segment(commits)) == commits
    for broken in (packed[:-9], packed[:20] + b"\0" * 20 + packed[40:], packed + b"tail"):
        with pytest.raises(ValueError):
            unpack_segment(broken)


def test_a_segment_that_inflates_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commits_module, "MAX_SEGMENT_BYTES", 1000)
    with pytest.raises(ValueError, match="inflates past 1000 bytes"):
        unpack_segment(gzip.compress(b"{}\n" * 1000))
    with pytest.raises(ValueError, match="over 1000 bytes"):  # refused by the size its frame says
        unpack_segment(pack_segment([b"{}"] * 1000))


@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_writers_on_a_folder_without_fsync_lock_the_tail_and_never_lose_a_create(
    tmp_path: Path, fsync: bool
) -> None:
    """Issue 12 item 7: a stale writer on a folder without fsync reads up to the tail under the
    partition's lock, then creates the next commit at once; with fsync, writers race (measured faster)."""
    first = PartitionLog(LocalBucket(tmp_path, fsync=fsync), PREFIX)
    bucket = Wrapped(LocalBucket(tmp_path, fsync=fsync))
    bucket.fsync = fsync  # type: ignore[attr-defined]
    bucket.exclusive = bucket.inner.exclusive  # type: ignore[method-assign]
    stale = PartitionLog(bucket, PREFIX)
    first.append([event(uuid.uuid4(), 1)])
    stale.max_notification_id()
    for _ in range(3):
        first.append([event(uuid.uuid4(), 1)])
    creates: list[str] = []
    real_write = bucket.write

    def write(name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        creates.append(name)
        return real_write(name, data, if_generation_match=if_generation_match)

    bucket.write = write  # type: ignore[method-assign]
    assert stale.append([event(uuid.uuid4(), 1)]) == [5]
    tried = [name for name in creates if name.startswith(PREFIX)]
    assert tried == ([commit_name(PREFIX, 2), commit_name(PREFIX, 5)] if fsync else [commit_name(PREFIX, 5)])


def test_a_segment_small_enough_not_to_reach_the_limit_inflates_unbounded_and_still_checked() -> None:
    """Deflate inflates a byte to at most 1032: a segment under the limit / 1032 is inflated in one go (a
    fifth faster than in bounded steps), and is refused all the same when truncated or followed by bytes."""
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024), compresslevel=9)
    assert commits_module._MAX_DEFLATE_RATIO * len(bomb) >= 8 * 1024 * 1024
    assert len(bomb) * commits_module._MAX_DEFLATE_RATIO <= commits_module.MAX_SEGMENT_BYTES
    assert commits_module.inflate_segment(bomb) == b"\0" * (8 * 1024 * 1024)
    for broken in (bomb[:-9], bomb + b"tail"):
        with pytest.raises(ValueError):
            commits_module.inflate_segment(broken)


def test_a_verified_segment_inflates_without_its_crc_and_is_still_refused_when_cut_or_followed() -> None:
    """A gzip segment (an older release's) known by its SHA-256 is inflated as deflate data (its gzip
    CRC-32 not computed again), to the same bytes; its length is still checked."""
    commits = [b'{"seq": %d, "events": []}' % n for n in range(1, 200)]
    packed = _gzip_segment(commits)
    lines = b"".join(c + b"\n" for c in commits)
    inflate = commits_module.inflate_segment
    assert inflate(packed, verified=True) == inflate(packed) == lines
    bad_crc = packed[:-8] + bytes(4) + packed[-4:]  # the CRC alone changed: only the full check sees it
    assert commits_module.inflate_segment(bad_crc, verified=True) == lines
    with pytest.raises(ValueError):
        commits_module.inflate_segment(bad_crc)
    for broken in (packed[:-9], packed[:-4] + bytes(4), packed + b"tail"):
        with pytest.raises(ValueError):
            commits_module.inflate_segment(broken, verified=True)
