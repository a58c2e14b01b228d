"""``PartitionIndex``: what a partition's commits hold, in memory, for the recorders' queries.

Events by notification id (a list: id ``n`` is at ``n - 1``, ids being
contiguous), each aggregate's versions (sorted, with their positions), the
last tracking id per upstream application, and the tail (last commit's
sequence number and hash). Events are kept as the commit decoder made them
(``EventRecord`` Structs, which the garbage collector does not track);
Notification and StoredEvent objects are made only for what a query returns.
The per-aggregate index is brought up to date when a query or a check first
needs it, so a replay that only pages through notifications never pays for it.

An index started from a log index (``start_from``: a warm start) knows every
aggregate's versions and positions and each commit's size, but not the events
before its ``seq``: those slots hold None until ``fill`` puts a verified
segment's events there. A query that meets one calls ``fault`` (set by the
log) with the positions it needs, then reads again; paging through notifications
says so (``sequential``), so the log may read the next segment ahead.

Only the one thread holding the log's tail lock adds; readers may query at
any time. The event list only grows, a whole commit at a time, so a reader
sees a prefix of whole commits.
"""

from __future__ import annotations

import array
import bisect
import itertools
import threading
from collections.abc import Callable, Sequence
from uuid import UUID

from eventsourcing.persistence import DataError, IntegrityError, Notification, StoredEvent

from storage.eventstore.commits import Commit, EventRecord, SealedCommit, TrackingRecord
from storage.eventstore.log_index import Aggregate, LogIndex, TextAggregate

__all__ = ["PartitionIndex", "Versions"]

Versions = dict[UUID | str, set[int]]
"""Versions by aggregate (a batch's: what it would record)."""


class _Sequence:
    """One aggregate's versions (sorted) and the positions of their events."""

    __slots__ = ("originator_id", "positions", "versions")

    def __init__(self, originator_id: UUID | str) -> None:
        self.originator_id = originator_id
        self.versions: list[int] = []
        self.positions: list[int] = []

    def insert(self, version: int, position: int) -> None:
        """Add a version lower than the last (appending a higher one is done inline by the index)."""
        at = bisect.bisect_left(self.versions, version)
        self.versions.insert(at, version)
        self.positions.insert(at, position)

    def has(self, version: int) -> bool:
        at = bisect.bisect_left(self.versions, version)
        return at < len(self.versions) and self.versions[at] == version


class PartitionIndex:
    """The events, versions and tracking ids of the commits added so far."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tail_seq = 0
        self.tail_sha = ""
        self._lock = threading.Lock()
        self._events: list[EventRecord | None] = []  # as decoded (Structs the GC does not track); None: not
        # paged in yet (an index started from a log index)
        self._sequences: dict[UUID | str, _Sequence] = {}  # a UUID and its string are different ids
        self._indexed = 0  # events[:_indexed] are in _sequences; the rest are indexed when first asked
        self._tracking: dict[str, int] = {}
        self._commit_ends = array.array("q")  # each commit's last notification id, in order
        self.fault: Callable[[list[int], bool], None] | None = None
        """Page in the events at these positions (set by the log of an index with holes); the flag: they are
        a page of notifications (more are likely to be asked for next)."""
        self.holes = False  # some events are not paged in yet

    def start_from(self, log_index: LogIndex) -> None:
        """Take what ``log_index`` says of commits 1..seq, the events left out (None). Only on an empty
        index, by the thread holding the log's tail lock."""
        with self._lock:
            if self.tail_seq or self._events:
                raise ValueError(f"{self.name}: an index starts from a log index only when empty")
            ends = array.array("q", itertools.accumulate(log_index.commit_events))
            total = ends[-1] if ends else 0
            sequences: dict[UUID | str, _Sequence] = {}
            for entry in itertools.chain(log_index.aggregates, log_index.text_aggregates):
                sequence = sequences[entry.id] = _Sequence(entry.id)
                sequence.positions = entry.positions
                sequence.versions = entry.versions or list(range(1, len(entry.positions) + 1))
                if len(sequence.versions) != len(entry.positions) or (
                        entry.positions and not 0 <= entry.positions[-1] < total):
                    raise ValueError(f"{self.name}: the log index's entry for {entry.id} does not fit")
            self._events = [None] * total
            self._commit_ends = ends
            self._sequences = sequences
            self._indexed = total
            self._tracking = dict(log_index.tracking)
            self.tail_seq, self.tail_sha = log_index.seq, log_index.sha256
            self.holes = total > 0

    def commit_ends(self, first_seq: int, last_seq: int) -> list[int]:
        """The last notification id of each commit ``first_seq..last_seq`` (0 before commit 1)."""
        with self._lock:
            return [self._commit_ends[seq - 1] if seq >= 1 else 0 for seq in range(first_seq, last_seq + 1)]

    def fill(self, first_position: int, records: Sequence[EventRecord]) -> None:
        """Put verified events in their (empty) slots from ``first_position`` on."""
        with self._lock:
            self._events[first_position : first_position + len(records)] = records

    def log_index(self, boundaries: list[str], signed_from: int | None) -> LogIndex:
        """What this index holds, as a log index (unsigned) at its tail."""
        with self._lock:
            self._index_aggregates()
            ends = self._commit_ends
            counts = [ends[0], *(b - a for a, b in itertools.pairwise(ends))] if ends else []
            aggregates, texts = [], []
            for key, sequence in self._sequences.items():
                versions = sequence.versions
                plain = versions[-1] == len(versions) and versions[0] == 1
                stored = [] if plain else list(versions)
                if isinstance(key, UUID):
                    aggregates.append(Aggregate(key, list(sequence.positions), stored))
                else:
                    texts.append(TextAggregate(key, list(sequence.positions), stored))
            return LogIndex(seq=self.tail_seq, sha256=self.tail_sha, boundaries=boundaries,
                            commit_events=counts, aggregates=aggregates, text_aggregates=texts,
                            tracking=dict(self._tracking), signed_from=signed_from)
    def __len__(self) -> int:
        """How many events: the last notification id (0 when empty)."""
        return len(self._events)

    def commit_of(self, notification_id: int) -> int | None:
        """The sequence number of the commit holding ``notification_id`` (None: not added yet)."""
        with self._lock:
            at = bisect.bisect_left(self._commit_ends, notification_id)
            return at + 1 if notification_id >= 1 and at < len(self._commit_ends) else None

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._tracking.get(application_name)

    def check(self, keys: Versions, tracking: TrackingRecord | None) -> None:
        """Raise IntegrityError if a version in ``keys`` (each aggregate's versions) is taken or ``tracking``
        is not past the last one."""
        with self._lock:
            self._index_aggregates()
            sequences = self._sequences
            for originator_id, versions in keys.items():
                sequence = sequences.get(originator_id)
                if sequence is None:
                    continue
                for version in versions:
                    if sequence.has(version):
                        raise IntegrityError(f"version {version} of {originator_id} is already recorded in "
                                             f"{self.name}")
            if tracking is not None:
                last = self._tracking.get(tracking.application_name)
                if last is not None and last >= tracking.notification_id:
                    raise IntegrityError(f"tracking {tracking.application_name}#{tracking.notification_id} "
                                         f"is not past {last} in {self.name}")

    def add(self, commits: Sequence[Commit | SealedCommit], shas: Sequence[str]) -> None:
        """Add commits that follow the tail in order (``shas``: of each one's bytes).

        A commit out of place (sequence number or first notification id) raises
        DataError after the ones before it are added. This is the cold-replay
        hot path: whole-batch steps only, the aggregates are indexed on demand.
        """
        if not commits:
            return
        with self._lock:
            seqs = [commit.seq for commit in commits]
            first_ids = [commit.first_id for commit in commits]
            expected_ids = list(itertools.accumulate([len(self._events) + 1,
                                                      *(len(commit.events) for commit in commits[:-1])]))
            expected_seqs = range(self.tail_seq + 1, self.tail_seq + 1 + len(commits))
            if seqs != list(expected_seqs) or first_ids != expected_ids:
                bad = next(i for i in range(len(commits))
                           if seqs[i] != expected_seqs[i] or first_ids[i] != expected_ids[i])
                self._extend(commits[:bad], shas[:bad])
                raise DataError(f"{self.name}: commit {seqs[bad]} (first notification id {first_ids[bad]}) "
                                f"found after commit {self.tail_seq} (last id {len(self._events)}); "
                                "run storage.eventstore.verify_chain")
            self._extend(commits, shas)

    def _extend(self, commits: Sequence[Commit | SealedCommit], shas: Sequence[str]) -> None:
        """Append checked commits. Needs ``_lock``."""
        if not commits:
            return
        for commit in commits:
            self._events.extend(commit.events)
            self._commit_ends.append(len(self._events))
        for commit in commits:
            if commit.tracking is not None:
                self._tracking[commit.tracking.application_name] = commit.tracking.notification_id
        self.tail_seq, self.tail_sha = commits[-1].seq, shas[-1]

    def _index_aggregates(self) -> None:
        """Bring ``_sequences`` up to date with ``_events``. Needs ``_lock``."""
        events, sequences = self._events, self._sequences
        if len(events) - self._indexed > 1 and self._index_one_run():
            return
        for position in range(self._indexed, len(events)):
            record = events[position]
            originator_id = record.originator_id if record.originator_id is not None else record.text_id or ""
            version = record.originator_version
            sequence = sequences.get(originator_id)
            if sequence is None:
                sequence = sequences[originator_id] = _Sequence(originator_id)
            if not sequence.versions or version > sequence.versions[-1]:
                sequence.versions.append(version)
                sequence.positions.append(position)
            else:
                sequence.insert(version, position)
        self._indexed = len(events)

    def _index_one_run(self) -> bool:
        """Index the events not indexed yet in one step if they are one aggregate's next versions in order
        (a save of one aggregate: the usual case); False (nothing done) if they are not. Needs ``_lock``."""
        start, end = self._indexed, len(self._events)
        run = self._events[start:end]
        first = run[0]
        if first is None:
            return False
        by_uuid = first.originator_id is not None
        ids = [record.originator_id if by_uuid else record.text_id for record in run]  # type: ignore[union-attr]
        key = ids[0]
        if not key or ids.count(key) != len(ids):  # (count compares by identity first: one id object)
            return False
        versions = [record.originator_version for record in run]  # type: ignore[union-attr]
        if versions != list(range(versions[0], versions[0] + len(versions))):
            return False
        sequence = self._sequences.get(key)
        if sequence is None:
            sequence = self._sequences[key] = _Sequence(key)
        elif sequence.versions and versions[0] <= sequence.versions[-1]:
            return False
        sequence.versions.extend(versions)
        sequence.positions.extend(range(start, end))
        self._indexed = end
        return True

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> list[StoredEvent]:
        with self._lock:
            self._index_aggregates()
            sequence = self._sequences.get(originator_id) or self._sequences.get(_as_uuid(originator_id))
            if sequence is None:
                return []
            versions = sequence.versions
            low = 0 if gt is None else bisect.bisect_right(versions, gt)
            high = len(versions) if lte is None else bisect.bisect_right(versions, lte)
            positions = sequence.positions[low:high]
        if desc:
            positions.reverse()
        if limit is not None:
            positions = positions[: max(limit, 0)]
        events = self._page_in(positions)
        return [stored_event(events[p]) for p in positions]  # type: ignore[arg-type]

    def _page_in(self, positions: Sequence[int], *, sequential: bool = False) -> list[EventRecord | None]:
        """The events list, once every one of ``positions`` is in it (asking ``fault`` for the rest)."""
        events = self._events
        if self.holes and self.fault is not None:
            missing = [p for p in positions if events[p] is None]
            if missing:
                self.fault(missing, sequential)
        return events

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
                             ) -> list[Notification]:
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        first = max(first, 1)
        events = self._events
        end = len(events) if stop is None else min(stop, len(events))
        if limit <= 0 or first > end:
            return []
        if not topics:
            records = self.select_records(first, min(limit, end - first + 1))
            return list(map(_notification, range(first, first + len(records)), records))
        events = self._page_in(range(first - 1, end), sequential=True)
        wanted = set(topics)
        chosen = ((n, r) for n, r in zip(itertools.count(first), events[first - 1 : end], strict=False)
                  if r.topic in wanted)
        return [_notification(n, r) for n, r in itertools.islice(chosen, limit)]

    def select_records(self, start: int, limit: int) -> list[EventRecord]:
        """The stored records of notifications ``start..`` (at most ``limit``), as kept: what
        ``select_notifications`` makes its notifications of, for a replay that maps them itself."""
        first = max(start, 1)
        stop_at = min(len(self._events), first - 1 + limit)
        if limit <= 0 or first > stop_at:
            return []
        events = self._page_in(range(first - 1, stop_at), sequential=True)
        return events[first - 1 : stop_at]  # type: ignore[return-value]


_new = object.__new__
_set = object.__setattr__


def _notification(id_: int, r: EventRecord) -> Notification:
    """Notification ``id_`` of record ``r``, made without the frozen dataclass's five ``object.__setattr__``
    calls (a replay's hot path: filling its fresh ``__dict__`` is a fifth faster than replacing it)."""
    notification = _new(Notification)
    state = r.state
    notification.__dict__.update(
        originator_id=r.originator_id if r.originator_id is not None else r.text_id or "",
        originator_version=r.originator_version, topic=r.topic,
        state=state.encode() if state is not None else r.state_b64 or b"", id=id_)
    return notification


def stored_event(r: EventRecord) -> StoredEvent:
    """The library's ``StoredEvent`` of record ``r``."""
    event = _new(StoredEvent)
    _set(event, "__dict__", {
        "originator_id": r.originator_id if r.originator_id is not None else r.text_id or "",
        "originator_version": r.originator_version, "topic": r.topic,
        "state": r.state.encode() if r.state is not None else r.state_b64 or b""})
    return event


def _as_uuid(originator_id: UUID | str) -> UUID | None:
    """The UUID a string id spells, so a UUID aggregate can be asked for by its string too."""
    if isinstance(originator_id, str):
        try:
            return UUID(originator_id)
        except ValueError:
            return None
    return None
