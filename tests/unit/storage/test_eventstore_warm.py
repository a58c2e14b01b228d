"""Warm starts: a fresh process starts a partition's log from its signed log index (issue 18, part 4).

A fresh bucket object with its own ``Ledger`` stands for a fresh process (as in
``test_eventstore_signing``); segments are 4 commits long here.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from storage.eventstore import log as log_module
from storage.eventstore import verify_chain
from storage.eventstore.commits import (
    ChainBroken,
    commit_name,
    decode_commit,
    encode_commit,
    pack_segment,
    segment_name,
    unpack_segment,
)
from storage.eventstore.ledger import Ledger, LedgerSettings, configure_ledger
from storage.eventstore.log import PartitionLog
from storage.eventstore.log_index import decode_index, encode_index, index_name
from storage.eventstore.verified import forget_verified
from storage.memory import MemoryBucket
from tests.unit.storage.test_eventstore_signing import counted_hashes

PREFIX = "users/u1/events/"


@pytest.fixture(autouse=True)
def short_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "SEGMENT_COMMITS", 4)


class Counted(MemoryBucket):
    reads: list[str]
    threads: list[str]

    def read(self, name: str) -> bytes:
        self.reads.append(name)
        self.threads.append(threading.current_thread().name)
        return super().read(name)


def process(bucket: MemoryBucket, home: Path) -> tuple[PartitionLog, Counted]:
    """A fresh process's log of ``bucket`` (same objects, its own bucket object and ledger)."""
    view = Counted.__new__(Counted)
    view.__dict__.update(bucket.__dict__)
    view.reads, view.threads = [], []
    configure_ledger(view, Ledger(view, home, LedgerSettings()))
    return PartitionLog(view, PREFIX), view


def event(thing: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(thing, version, "tests:Thing.Happened", f'{{"v":{version}}}'.encode())


def history(tmp_path: Path, commits: int = 14) -> tuple[MemoryBucket, list[uuid.UUID]]:
    """``commits`` commits of one event: versions 1 of ``commits // 2`` aggregates, then their versions 2."""
    bucket = MemoryBucket()
    writer, _ = process(bucket, tmp_path)
    things = [uuid.uuid4() for _ in range(commits // 2)]
    for thing in things:
        writer.append([event(thing, 1)])
    for thing in things:
        writer.append([event(thing, 2)])
    return bucket, things


def test_a_fresh_process_reads_the_index_and_the_tail_then_pages_in_what_it_needs(tmp_path: Path) -> None:
    bucket, things = history(tmp_path)  # commits 1..14: indexes at 8 and 12 (the latest two are kept)
    assert list(bucket.list(f"{PREFIX}indexes/")) == [index_name(PREFIX, 8), index_name(PREFIX, 12)]
    log, seen = process(bucket, tmp_path)

    assert log.max_notification_id() == 14
    commits_read = [name for name in seen.reads if name.startswith(PREFIX) and name[len(PREFIX)].isdigit()]
    assert commits_read == [commit_name(PREFIX, seq) for seq in (13, 14, 15)]  # the tail (15: none yet)
    assert [name for name in seen.reads if "segments/" in name] == [segment_name(PREFIX, 16)]  # a probe

    seen.reads.clear()
    first = things[0]  # version 1 in commit 1 (segment 4), version 2 in commit 8 (segment 8)
    assert [(e.originator_version, e.state) for e in log.select_events(first)] == [(1, b'{"v":1}'),
                                                                                (2, b'{"v":2}')]
    assert [n for n in seen.reads if "segments/" in n] == [segment_name(PREFIX, 4), segment_name(PREFIX, 8)]

    with pytest.raises(IntegrityError):  # the index knows version 2 is taken without the events
        log.append([event(things[1], 2)])
    assert log.append([event(things[1], 3)]) == [15]
    full, _ = process(bucket, tmp_path)
    full._warm_tried = True  # a full replay, to compare with
    assert [(n.id, n.originator_id, n.state) for n in log.select_notifications(None, 100)] == \
        [(n.id, n.originator_id, n.state) for n in full.select_notifications(None, 100)]
    assert verify_chain(bucket, PREFIX).ok


def test_a_commit_changed_before_the_index_is_refused_when_paged_in(tmp_path: Path) -> None:
    bucket, things = history(tmp_path)
    bucket.delete(segment_name(PREFIX, 4))  # read commit by commit
    edited = decode_commit(bucket.read(commit_name(PREFIX, 2)))
    edited.events[0].state = '{"v":99}'
    bucket.write(commit_name(PREFIX, 2), encode_commit(edited))
    log, _ = process(bucket, tmp_path)

    assert log.max_notification_id() == 14  # the tail is fine
    with pytest.raises(ChainBroken, match="pinned"):
        log.select_events(things[1])


def test_a_forged_index_is_ignored_and_the_log_replayed(tmp_path: Path) -> None:
    bucket, things = history(tmp_path)
    for name in list(bucket.list(f"{PREFIX}indexes/")):
        index = decode_index(bucket.read(name))
        index.aggregates = [a for a in index.aggregates if a.id != things[0]]  # hide an aggregate
        bucket.write(name, encode_index(index))
    log, _ = process(bucket, tmp_path)

    assert log.max_notification_id() == 14
    assert log._started_from is None
    assert len(log.select_events(things[0])) == 2


def test_a_segment_verified_here_is_paged_in_unhashed_and_an_edited_copy_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, _ = history(tmp_path)  # the writer recorded each segment object it sealed, by its hash
    hashed = counted_hashes(monkeypatch)
    forget_verified()  # fresh processes: the verdicts from the file under the home only
    log, _ = process(bucket, tmp_path)
    expected = [(n.id, n.state) for n in log.select_notifications(None, 100)]
    assert len(expected) == 14 and hashed[0] == 2  # the tail's commits 13 and 14; segments 4, 8, 12 unhashed

    lines = unpack_segment(bucket.read(segment_name(PREFIX, 4)))
    edited = decode_commit(lines[1])
    edited.events[0].state = '{"v":99}'
    bucket.write(segment_name(PREFIX, 4), pack_segment([lines[0], encode_commit(edited), *lines[2:]]))
    forget_verified()
    hashed[0] = 0
    log, _ = process(bucket, tmp_path)
    assert [(n.id, n.state) for n in log.select_notifications(None, 100)] == expected  # the commit objects
    assert hashed[0] == 2 + 4 + 4  # the tail, the edited copy (refused), commits 1..4 read one by one


def test_paging_through_the_notifications_of_a_remote_bucket_reads_the_next_segment_ahead_once(
    tmp_path: Path,
) -> None:
    bucket, _ = history(tmp_path, commits=26)  # segments 4..24, the index at 24
    log, seen = process(bucket, tmp_path)
    log.read_workers = 2  # as on a remote bucket (a folder: one, and no reading ahead, see _read_ahead)
    full, _ = process(bucket, tmp_path)
    full._warm_tried = True  # a full replay, to compare with
    pages = []
    after = 0
    while page := log.select_notifications(after + 1, 3):  # less than a segment a page
        pages.append(page)
        after = page[-1].id
    assert [(n.id, n.state) for page in pages for n in page] == \
        [(n.id, n.state) for n in full.select_notifications(None, 100)]
    segments = [(name, thread) for name, thread in zip(seen.reads, seen.threads, strict=True)
                if "segments/" in name]
    assert sorted(name for name, _ in segments) == [segment_name(PREFIX, last) for last in range(4, 25, 4)]
    ahead = [name for name, thread in segments if thread != threading.current_thread().name]
    assert segment_name(PREFIX, 24) in ahead and segment_name(PREFIX, 4) not in ahead  # read ahead
    assert log._ahead is None  # none left reading past the index


def test_indexes_are_spaced_as_the_log_grows_and_a_start_from_an_older_one_reads_the_segments_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_module, "INDEX_SPACING", 2)  # a new index once the log grew by half
    written: list[int] = []
    write_index = PartitionLog._write_index

    def noted(log: PartitionLog) -> None:
        written.append(log.index.tail_seq)
        write_index(log)

    monkeypatch.setattr(PartitionLog, "_write_index", noted)
    bucket, things = history(tmp_path, commits=42)

    assert written == [4, 8, 12, 20, 32]  # each index at least half the one before it later (and a segment)
    assert list(bucket.list(f"{PREFIX}indexes/")) == [index_name(PREFIX, 20), index_name(PREFIX, 32)]
    log, seen = process(bucket, tmp_path)
    assert log.max_notification_id() == 42
    assert log._started_from is not None and log._started_from.seq == 32
    assert [n for n in seen.reads if "segments/" in n] == [segment_name(PREFIX, 36), segment_name(PREFIX, 40),
                                                          segment_name(PREFIX, 44)]  # 44: a probe
    full, _ = process(bucket, tmp_path)
    full._warm_tried = True  # a full replay, to compare with
    assert [(n.id, n.originator_id, n.state) for n in log.select_notifications(None, 100)] == \
        [(n.id, n.originator_id, n.state) for n in full.select_notifications(None, 100)]
    with pytest.raises(IntegrityError):  # versions recorded after the index are known too
        log.append([event(things[-1], 2)])
    assert log.append([event(things[-1], 3)]) == [43]
    assert verify_chain(bucket, PREFIX).ok
