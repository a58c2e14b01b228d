"""``PartitionLog``: one partition's commit log, cached and indexed in this process.

Commits never change once written, so whatever this process has read stays
valid: the log keeps every event it has seen (by notification id and by
aggregate) and only ever looks past its tail. Finding new commits is cheap:
read the next name; a miss means we are at the tail (one failed read, on
GCS one 404). A log far behind (a fresh process) reads whole segments (one
object per SEGMENT_COMMITS commits, see ``commits``) where they exist, and
on a remote bucket lists the remaining names and reads several at a time.
The log writes each segment as it passes a boundary.

Appending is optimistic: check the batch against the index, then create the
next commit name create-only. Losing that race means someone else's commit
is there: read it, check again (IntegrityError on a version or tracking
conflict), try the next number. Since every commit is created only after its
predecessor exists, a winner's index held every earlier commit when it
checked, so versions never duplicate and notification ids stay contiguous.

One ``PartitionLog`` per (bucket object, prefix) per process (``partition_log``),
shared by every recorder on it: threads of this process take turns to
append (one lock), and readers use the cache between tail checks.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    Notification,
    OperationalError,
    StoredEvent,
    Tracking,
)

from storage.bucket import AlreadyExists, Bucket, BucketError, ObjectNotFound, check_prefix
from storage.eventstore.commits import (
    SEGMENT_COMMITS,
    Commit,
    TrackingRecord,
    commit_name,
    decode_commit,
    encode_commit,
    event_record,
    pack_segment,
    record_state,
    segment_name,
    seq_of,
    sha256_hex,
    unpack_segment,
)

__all__ = ["MAX_COMMIT_BYTES", "PartitionLog", "partition_log", "read_many", "read_workers_for"]

MAX_COMMIT_BYTES = 8 * 1024 * 1024
"""Largest commit accepted: above it GCS uploads are resumable, which fake-gcs-server does not guard."""

_PROBES_BEFORE_LISTING = 4  # a remote bucket this far behind: list the names and read several at once
_REMOTE_READERS = 16
_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


class _Sequence:
    """One aggregate's events in this partition: versions (sorted) and their notification positions."""

    __slots__ = ("originator_id", "positions", "versions")

    def __init__(self, originator_id: UUID | str) -> None:
        self.originator_id = originator_id
        self.versions: list[int] = []
        self.positions: list[int] = []

    def add(self, version: int, position: int) -> None:
        if not self.versions or version > self.versions[-1]:
            self.versions.append(version)
            self.positions.append(position)
        else:
            at = bisect.bisect_left(self.versions, version)
            self.versions.insert(at, version)
            self.positions.insert(at, position)

    def has(self, version: int) -> bool:
        at = bisect.bisect_left(self.versions, version)
        return at < len(self.versions) and self.versions[at] == version


class PartitionLog:
    """The commits under ``prefix`` in ``bucket``, as far as this process has read them."""

    def __init__(self, bucket: Bucket, prefix: str, *, read_workers: int | None = None) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a partition prefix ends with '/': {prefix!r}")
        check_prefix(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.read_workers = read_workers_for(bucket) if read_workers is None else read_workers
        self._append_lock = threading.Lock()  # held while the tail moves (append or refresh)
        self._state_lock = threading.Lock()  # held briefly around the index, never during I/O
        self._tail_seq = 0
        self._tail_sha = ""
        self._notifications: list[Notification] = []  # position = notification id - 1
        self._sequences: dict[str, _Sequence] = {}
        self._tracking: dict[str, int] = {}
        self._refreshes_started = 0
        self._refreshes_done = 0
        self._listeners: set[threading.Event] = set()
        self._segment: list[bytes] | None = None  # bytes of the commits since the last segment boundary
        self._segment_bytes = 0

    def __repr__(self) -> str:
        return f"PartitionLog({self.bucket!r}, {self.prefix!r}, tail={self._tail_seq})"

    # -- what the recorders ask ------------------------------------------

    @property
    def tail_seq(self) -> int:
        return self._tail_seq

    def max_notification_id(self) -> int | None:
        self.refresh()
        return len(self._notifications) or None

    def max_tracking_id(self, application_name: str) -> int | None:
        self.refresh()
        return self._tracking.get(application_name)

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> list[StoredEvent]:
        self.refresh()
        with self._state_lock:
            sequence = self._sequences.get(str(originator_id))
            if sequence is None:
                return []
            versions = sequence.versions
            low = 0 if gt is None else bisect.bisect_right(versions, gt)
            high = len(versions) if lte is None else bisect.bisect_right(versions, lte)
            positions = sequence.positions[low:high]
            notifications = self._notifications
        if desc:
            positions.reverse()
        if limit is not None:
            positions = positions[: max(limit, 0)]
        return [_stored_event(notifications[p]) for p in positions]

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
                             ) -> list[Notification]:
        self.refresh()
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        first = max(first, 1)
        with self._state_lock:
            notifications = self._notifications
            end = len(notifications) if stop is None else min(stop, len(notifications))
        if limit <= 0 or first > end:
            return []
        if not topics:
            return notifications[first - 1 : min(end, first - 1 + limit)]
        wanted = set(topics)
        chosen = (n for n in itertools.islice(notifications, first - 1, end) if n.topic in wanted)
        return list(itertools.islice(chosen, limit))

    def listen(self, event: threading.Event) -> None:
        """Set ``event`` whenever this process appends to the log."""
        self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        self._listeners.discard(event)

    # -- appending -----------------------------------------------------------

    def append(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None = None) -> list[int]:
        """Record one batch as one commit; return its notification ids.

        Raises IntegrityError (an event's version is taken, the batch repeats one,
        or ``tracking`` is not past the application's last), DataError (batch too
        large), OperationalError (the bucket failed).
        """
        if not stored_events and tracking is None:
            return []
        records = [event_record(s.originator_id, s.originator_version, s.topic, s.state)
                   for s in stored_events]
        if len({(r.originator_id, r.originator_version) for r in records}) < len(records):
            raise IntegrityError(f"a batch repeats an (originator_id, originator_version): {self.prefix}")
        track = TrackingRecord(tracking.application_name, tracking.notification_id) if tracking else None
        with self._append_lock, _bucket_errors(self.prefix):
            while True:
                self._check(records, track)
                first_id = len(self._notifications) + 1
                commit = Commit(self._tail_seq + 1, first_id, self._tail_sha, records, track)
                data = encode_commit(commit)
                if len(data) > MAX_COMMIT_BYTES:
                    raise DataError(f"a batch of {len(records)} events encodes to {len(data)} bytes "
                                    f"(at most {MAX_COMMIT_BYTES}): save fewer events at once")
                name = commit_name(self.prefix, commit.seq)
                try:
                    self.bucket.create(name, data)
                except AlreadyExists:
                    winner = self.bucket.read(name)
                    if winner != data:  # someone else's commit: take it in, check again
                        self._apply(commit.seq, winner, decode_commit(winner))
                        self._catch_up()
                        continue
                    # else our own write, reported lost and retried by the client: it is ours
                self._apply(commit.seq, data, commit)
                break
        for listener in list(self._listeners):
            listener.set()
        return list(range(commit.first_id, commit.first_id + len(records)))

    def _check(self, records: Sequence[Any], track: TrackingRecord | None) -> None:
        with self._state_lock:
            for record in records:
                sequence = self._sequences.get(record.originator_id)
                if sequence is not None and sequence.has(record.originator_version):
                    raise IntegrityError(f"version {record.originator_version} of {record.originator_id} "
                                         f"is already recorded in {self.prefix}")
            if track is not None:
                last = self._tracking.get(track.application_name)
                if last is not None and last >= track.notification_id:
                    raise IntegrityError(f"tracking {track.application_name}#{track.notification_id} "
                                         f"is not past {last} in {self.prefix}")

    # -- reading the tail -----------------------------------------------------

    def refresh(self) -> None:
        """Read every commit written (by anyone) since the last look.

        Callers that arrive while another thread refreshes wait for it, then
        look again only if that refresh began before they asked.
        """
        asked_after = self._refreshes_started
        with self._append_lock:
            if self._refreshes_done > asked_after:
                return
            self._refreshes_started += 1
            ticket = self._refreshes_started
            with _bucket_errors(self.prefix):
                self._catch_up()
            self._refreshes_done = ticket

    def _catch_up(self) -> None:
        """Read past the tail until a name is missing. Needs ``_append_lock``.

        At a segment boundary, first try the whole next segment (one read for
        SEGMENT_COMMITS commits); else read the next commit. A remote bucket
        found far behind lists the commit names up to the next boundary and
        reads them several at a time.
        """
        probes = 0
        while True:
            if self._tail_seq % SEGMENT_COMMITS == 0 and self._read_segment():
                continue
            seq = self._tail_seq + 1
            try:
                data = self.bucket.read(commit_name(self.prefix, seq))
            except ObjectNotFound:
                return
            self._apply(seq, data, decode_commit(data))
            probes += 1
            if self.read_workers > 1 and probes >= _PROBES_BEFORE_LISTING:
                self._read_listed()

    def _read_listed(self) -> None:
        """Read the listed commits after the tail, up to the next segment boundary, stopping at a gap."""
        wanted = SEGMENT_COMMITS - self._tail_seq % SEGMENT_COMMITS
        names: list[str] = []
        start = commit_name(self.prefix, self._tail_seq + 1)
        for name in self.bucket.list(self.prefix, start_offset=start):
            if len(names) == wanted or seq_of(self.prefix, name) != self._tail_seq + 1 + len(names):
                break  # enough, a gap (a listing may miss a name being created), or past the commits
            names.append(name)
        for data in read_many(self.bucket, names, workers=self.read_workers):
            self._apply(self._tail_seq + 1, data, decode_commit(data))

    def _read_segment(self) -> bool:
        """Apply the segment that starts after the (aligned) tail, if there is one and it fits.

        It fits when its commits link by hash from our tail to the bytes of the
        real last commit object: then each one is exactly the commit object.
        """
        last = self._tail_seq + SEGMENT_COMMITS
        name = segment_name(self.prefix, last)
        try:
            lines = unpack_segment(self.bucket.read(name))
            if len(lines) != SEGMENT_COMMITS:
                raise ValueError(f"{len(lines)} commits, not {SEGMENT_COMMITS}")
            commits = [decode_commit(data) for data in lines]  # msgspec's errors are ValueErrors
            prev_sha = self._tail_sha
            for seq, (data, commit) in enumerate(zip(lines, commits, strict=True), start=self._tail_seq + 1):
                if commit.seq != seq or commit.prev_sha256 != prev_sha:
                    raise ValueError(f"commit {commit.seq} does not follow commit {seq - 1} by hash")
                prev_sha = sha256_hex(data)
            if self.bucket.read(commit_name(self.prefix, last)) != lines[-1]:
                raise ValueError(f"its last commit differs from {commit_name(self.prefix, last)}")
        except ObjectNotFound:
            return False
        except ValueError as exc:
            _log.warning("ignoring segment %s (%s); reading its commits one by one", name, exc)
            return False
        for data, commit in zip(lines, commits, strict=True):
            self._apply(self._tail_seq + 1, data, commit, from_segment=True)
        return True

    def _apply(self, seq: int, data: bytes, commit: Commit, *, from_segment: bool = False) -> None:
        """Add commit ``seq`` (the one after the tail) to the index. Needs ``_append_lock``."""
        if seq != self._tail_seq + 1 or commit.seq != seq or commit.first_id != len(self._notifications) + 1:
            raise DataError(f"{commit_name(self.prefix, seq)} does not follow commit {self._tail_seq}: "
                            f"it says seq {commit.seq}, first notification id {commit.first_id}, "
                            f"expected {len(self._notifications) + 1} (run storage.eventstore.verify_chain)")
        if commit.prev_sha256 != self._tail_sha:
            _log.error("%s does not hold the hash of commit %d: the log was changed "
                       "(run storage.eventstore.verify_chain)", commit_name(self.prefix, seq), seq - 1)
        new = []
        with self._state_lock:
            position = len(self._notifications)
            sequences = self._sequences
            for record in commit.events:
                key = record.originator_id
                sequence = sequences.get(key)
                if sequence is None:
                    originator_id = key if record.text_id else UUID(key)
                    sequence = sequences[key] = _Sequence(originator_id)
                sequence.add(record.originator_version, position)
                position += 1
                new.append(_notification(position, sequence.originator_id, record.originator_version,
                                         record.topic, record_state(record)))
            self._notifications.extend(new)  # append-only: readers slice below a length they read
            if commit.tracking is not None:
                self._tracking[commit.tracking.application_name] = commit.tracking.notification_id
            self._tail_seq = seq
            self._tail_sha = sha256_hex(data)
        self._collect_for_segment(seq, data, from_segment)

    def _collect_for_segment(self, seq: int, data: bytes, from_segment: bool) -> None:
        """Keep the bytes of the commits since the last boundary; at the next one, write their segment."""
        if from_segment:
            self._segment = None
            return
        if seq % SEGMENT_COMMITS == 1:
            self._segment, self._segment_bytes = [], 0
        if self._segment is None:
            return
        self._segment.append(data)
        self._segment_bytes += len(data)
        if self._segment_bytes > _MAX_SEGMENT_BYTES:
            self._segment = None
        elif seq % SEGMENT_COMMITS == 0:
            packed, self._segment = pack_segment(self._segment), None
            try:
                self.bucket.create(segment_name(self.prefix, seq), packed)
            except AlreadyExists:
                pass
            except BucketError as exc:  # a segment is only a cache: the commits are written
                _log.warning("could not write segment %s: %s", segment_name(self.prefix, seq), exc)


def _notification(id_: int, originator_id: UUID | str, version: int, topic: str,
                  state: bytes) -> Notification:
    """A Notification built without the frozen dataclass's per-field ``object.__setattr__`` (hot path)."""
    notification = object.__new__(Notification)
    object.__setattr__(notification, "__dict__", {
        "originator_id": originator_id, "originator_version": version, "topic": topic, "state": state,
        "id": id_,
    })
    return notification


def _stored_event(n: Notification) -> StoredEvent:
    event = object.__new__(StoredEvent)
    object.__setattr__(event, "__dict__", {
        "originator_id": n.originator_id, "originator_version": n.originator_version, "topic": n.topic,
        "state": n.state,
    })
    return event


def read_many(bucket: Bucket, names: Sequence[str], *, workers: int = 1) -> Iterator[bytes]:
    """The bytes of each of ``names``, in order; ``workers`` > 1 reads that many at once."""
    if workers <= 1 or len(names) < 2:
        return (bucket.read(name) for name in names)
    return _pool(workers).map(bucket.read, names)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="eventstore-read")
        return pool


def read_workers_for(bucket: Bucket) -> int:
    """Several reads at once for a remote bucket; one for a folder or memory (threads only cost there)."""
    from storage.local import LocalBucket
    from storage.memory import MemoryBucket

    return 1 if isinstance(bucket, LocalBucket | MemoryBucket) else _REMOTE_READERS


@contextlib.contextmanager
def _bucket_errors(prefix: str) -> Iterator[None]:
    """Bucket failures surface as the library's OperationalError; undecodable commits as DataError."""
    try:
        yield
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DataError(f"a commit under {prefix} is not a valid commit object: {exc}") from exc
    except BucketError as exc:
        raise OperationalError(f"bucket failed under {prefix}: {exc}") from exc


_logs: weakref.WeakKeyDictionary[Bucket, dict[str, PartitionLog]] = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def partition_log(bucket: Bucket, prefix: str) -> PartitionLog:
    """This process's one ``PartitionLog`` for ``prefix`` in ``bucket`` (kept while the bucket lives)."""
    with _logs_lock:
        logs = _logs.setdefault(bucket, {})
        log = logs.get(prefix)
        if log is None:
            log = logs[prefix] = PartitionLog(bucket, prefix)
        return log
