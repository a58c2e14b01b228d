"""``PartitionLog``: one partition's commit log, as far as this process has read it.

Commits never change once written, so whatever this process has read stays
valid: the log keeps an index of every event it has seen (``PartitionIndex``)
and only ever looks past its tail. Finding new commits is cheap: read the
next name; a miss means we are at the tail (one failed read, on GCS one 404).
A log far behind (a fresh process) reads whole segments (one object per
SEGMENT_COMMITS commits, see ``commits``) where they exist, and on a remote
bucket lists the remaining names and reads several at a time. The log writes
each segment as it passes a segment boundary.

Appending is optimistic: check the batch against the index, then create the
next commit name create-only. Losing that race means someone else's commit
is there: read it, check again (IntegrityError on a version or tracking
conflict), try the next number. Several processes writing one partition
race for each name, and the one that just won already knows the next tail: a
loser backs off a random while (up to 2**losses creates' time) before it
reads the commits after its tail and tries once more (``_back_off``), so it
neither wastes a create (on a folder, an fsync) per commit nor lists the
bucket per commit. It reads them by name (a remote bucket a few names at
once) and checks every hash link but only the last one's signature (see
"Signed commits"). On a folder written without fsync, appends instead take
the partition's lock (``Bucket.exclusive``, an flock) around "read up to the
tail, create the next commit": no create is lost, nobody backs off
(``_locks_appends`` says why not with fsync). Since every commit is created only after its
predecessor exists, a winner's index held every earlier commit when it
checked, so versions never duplicate and notification ids stay contiguous.

The relay (``storage.eventstore.relay``): several processes appending to one
partition with one key elect a leader once they meet (a lost create, or another
writer's commits under the lock), and the others hand it their batches without
tracking (``append`` -> ``Relay.hand_over``); the leader commits them in its
group commit (``append_relayed``), its token for each in the commit's nonce. A
leader does not back off after a lost create: it carries the others' batches.

One ``PartitionLog`` per (bucket object, prefix) per process (``partition_log``),
shared by every recorder on it: threads of this process take turns to move
the tail (one lock); readers query the index between tail checks.

A broken chain is neither served nor extended. Every commit read is checked
against the hash of the commit before it as this process read (or wrote) it;
one that does not match raises ``ChainBroken`` (and so does every later
query: the log stops before it). A segment is taken only when its commits
link from our tail to the exact bytes of the block's last commit object, so
it cannot hold a history other than the one the objects' chain pins; the
commit after it must link to that last commit as well. An audit that must
replay a tampered log to show what the change did reads inside
``serving_broken_chains()`` (this thread only): there a broken link is logged
and read past; the log keeps the break, so outside that block it still
raises and never appends.

The last commit has no successor to vouch for it: its hash is what the next
commit will link to. A log appending for the first time therefore first
checks the tail against the anchor the views recorded
(``<partition>/metadata/position.json``: ``commit`` and ``commit_sha256``,
written by the projector): a tail whose bytes differ, or an anchored commit
that is gone, raises ``ChainBroken`` instead of being linked to (one read of
position.json per log, none per commit). After that the log links to the
hashes as it read them, so a commit edited later is exposed by the next
commit's link, not hidden by it.

Signed commits (``storage.eventstore.signing``, the bucket's ``Ledger``): a log
appending signs each commit with its role's key (published in the keyring
first). With a keyring (a root public key known here) every commit read is
verified: a signature that does not verify, a key the root does not vouch for,
or an unsigned commit after a signed one raises ``ChainBroken`` like a broken
link, so a forged commit with a correct link is neither served nor extended.
An append's own catch-up (the commits of other writers between its tail and
the name it creates) verifies only the last signature of each stretch it
reads, and every hash link: a writer verifies the tail it links to, and a
signature covers the hash of the commit before it, so the last signature
vouches for the whole stretch; when it fails, every signature is checked to
name the first bad one. A whole segment is verified once per machine: the verdict is kept by the hash
of its last commit (which pins every commit of it) under the home
(``storage.eventstore.verified``), and the writer that seals a segment records
it; so is the tail after the last segment, by a reader that verified many of its
commits at once. A verdict also keeps the SHA-256 of the segment object it was
reached on: the same object met again is indexed without hashing its commits or
decoding their signatures (``_sealed``), only where they sit checked. So a cold
replay on a machine that wrote or replayed the log checks no signature but those
of the commits written since. A log does not check the signature of its own
commit, just signed.

The witness (``TUNE_WITNESS``, ``storage.eventstore.witness``): after its
commits a writer publishes the head it reached (at least every N commits or T
seconds), and before its first append checks its tail against the latest
witnessed heads: a log that ends before a witnessed head (rolled back, its tail
removed together with position.json) or whose commit at the witnessed seq has
another hash (a forged tail) raises ``ChainBroken`` instead of being extended.

Warm starts (``storage.eventstore.log_index``): a writer that passes a segment
boundary also writes a signed log index there (the latest two are kept), once the
log has grown by an eighth since the latest index it knows (``INDEX_SPACING``). A log
opened afresh (outside ``serving_broken_chains``, with a keyring) starts from
the latest index that verifies and reads only the commits after it; the events
before it are paged in a segment at a time when a query first needs them
(loading an aggregate, paging through notifications), each segment checked by
hash against the boundaries the index pins and by signature. So a restarted
server's first write to a heavy user's partition reads the index, the tail,
and the segments holding the aggregates the command loads, not the partition.

An empty last commit object is treated as absent. A commit is created whole
(``LocalBucket`` publishes a finished temp file; a GCS create is atomic), so an
empty object is never a write in progress: it is what a power loss leaves of a
commit on a local bucket written without fsync (``file:///...?fsync=0``, or a
bucket written before fsync was the default). Such a commit's bytes are gone
whatever we do, and keeping the partition unreadable would not bring them back.
So a reader that finds the commit after its tail empty, with no commit after
it, stops there as at a missing name (logged once); a writer that meets it
replaces it with its own commit by a generation-matched write, which only one
writer can win (the others see the winner's commit and go on as after a lost
create). Nothing is hidden by this: an empty commit holds no events to hide,
and if it had been seen and projected, position.json anchors it, so the
writer's anchor check (and the audit's) names it ``missing``, as any removed
tail. An empty commit with a commit after it, or a last commit that is not
empty but does not decode (truncated, or edited), raises DataError naming the
commit: it may be a tamper, and it may have held acknowledged events, so it is
never skipped nor replaced; the audit names it (``invalid``).

Errors: IntegrityError (a version or tracking conflict, or a batch another
writer already stored), DataError (a batch too large, a commit that is not a
commit object), ``ChainBroken`` (a DataError: see above), OperationalError
(the bucket failed).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar
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

from storage.bucket import (
    AlreadyExists,
    Bucket,
    BucketError,
    ObjectNotFound,
    PreconditionFailed,
    check_prefix,
)
from storage.eventstore.commits import (
    MAX_SEGMENT_BYTES,
    SEGMENT_COMMITS,
    ChainBroken,
    Commit,
    EventRecord,
    SealedCommit,
    TrackingRecord,
    check_signature,
    commit_name,
    decode_commit,
    decode_sealed_segment,
    decode_segment,
    encode_commit,
    event_record,
    inflate_segment,
    pack_segment,
    segment_name,
    seq_of,
    sha256_hex,
    sha256_hexes,
    signed_commit,
)
from storage.eventstore.index import PartitionIndex, Versions
from storage.eventstore.ledger import Ledger, ledger_for
from storage.eventstore.log_index import (
    LogIndex,
    check_index,
    decode_index,
    encode_index,
    index_name,
    indexes_prefix,
    sign_index,
)
from storage.eventstore.relay import Relay
from storage.eventstore.signing import SigningKey
from storage.eventstore.verified import UNKNOWN
from storage.eventstore.witness import Witness, partition_of
from storage.layout import events_prefix, position

__all__ = [
    "MAX_COMMIT_BYTES",
    "MAX_SHARED_LOGS",
    "ChainBroken",
    "PartitionLog",
    "forget_log",
    "io_workers_for",
    "partition_log",
    "read_many",
    "reader_for",
    "serving_broken_chains",
]

MAX_COMMIT_BYTES = 8 * 1024 * 1024
"""Largest commit accepted: above it GCS uploads are resumable, which fake-gcs-server does not guard."""

_GROUP_BYTES = MAX_COMMIT_BYTES // 4  # the batches one commit takes together: their states, at most
_GROUP_BATCHES = 256  # ... and this many
_PROBES_BEFORE_LISTING = 8  # a remote bucket this far behind: list the names and read several at once
_BACKOFF_CREATES = 4  # a writer that lost the tail this many times in a row waits up to 2**4 creates' time
_BACKOFF_MAX_S = 0.25
_REMOTE_READERS = 16
_TAIL_WINDOW = 4  # names an append reads at once past its tail on a remote bucket (commits of other writers)
_TAIL_VERDICT_MIN = 16  # a reader that checked this many signatures past the last segment records a verdict
KEPT_LOG_INDEXES = 2
"""Log indexes kept per log (the older ones are removed when a new one is written)."""
INDEX_SPACING = 8
"""A writer writes a log index at a segment boundary once the commits since the latest index it knows of
are at least one ``INDEX_SPACING``-th of that index's (and at least a segment's). An index costs time in
proportion to the whole log (every aggregate's versions and positions): written at every boundary it made
a save's cost grow with its partition (1-event saves on a tmpfs folder, no fsync: 268 us each after 1,024
aggregates, 392 after 32,768). Spaced so, its cost per commit stays flat, and a restart reads at most an
eighth more of the log after the index, as whole segments."""
_log = logging.getLogger(__name__)
T = TypeVar("T")
_Fetched = tuple[bytes, str, bytes | None]  # a segment object, its SHA-256, its lines (None: corrupt)
_serving_broken = threading.local()  # .depth: how many ``serving_broken_chains()`` this thread is inside


@contextlib.contextmanager
def serving_broken_chains() -> Iterator[None]:
    """For an audit, in this thread: read past a broken link (logged) instead of raising ChainBroken.

    A log that read past one keeps it: outside the block its queries raise and it never appends.
    """
    depth = getattr(_serving_broken, "depth", 0)
    _serving_broken.depth = depth + 1
    try:
        yield
    finally:
        _serving_broken.depth = depth


class _Batch:
    """One ``append`` call waiting for the tail: its result is its ids, or the error it raises."""

    __slots__ = ("keys", "records", "result", "size", "token", "track")

    def __init__(self, records: list[EventRecord], keys: Versions,
                 track: TrackingRecord | None, token: str = "") -> None:
        self.records = records
        self.keys = keys
        self.track = track
        self.token = token  # a relayed batch's (storage.eventstore.relay): recorded in its commit's nonce
        self.size = sum(len(r.state or r.state_b64 or "") + 200 for r in records)
        self.result: list[int] | BaseException | None = None


class PartitionLog:
    """The commits under ``prefix`` in ``bucket``."""

    def __init__(self, bucket: Bucket, prefix: str, *, read_workers: int | None = None,
                 ledger: Ledger | None = None) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a partition prefix ends with '/': {prefix!r}")
        check_prefix(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.read_workers = io_workers_for(bucket) if read_workers is None else read_workers
        self._read = reader_for(bucket)
        self.index = PartitionIndex(prefix)
        self._tail_lock = threading.Lock()  # held while the tail moves (append or refresh)
        self._queue: deque[_Batch] = deque()  # batches waiting for the tail (group commit)
        self._queue_lock = threading.Lock()
        self._queued = threading.Condition(self._queue_lock)  # notified when a batch joins the queue
        # the thread moving the tail for the queued batches; the others wait for their result, not the lock
        # (which the next group's commit holds), so each hears of its batch as soon as its commit is made
        self._turn = threading.Condition(threading.Lock())
        self._committing = False
        self._refreshes_started = 0
        self._refreshes_done = 0
        self._listeners: set[threading.Event] = set()
        self._pins = threading.local()  # .depth: how many ``pinned()`` this thread is inside
        self._segment: list[bytes] | None = None  # bytes of the commits since the last segment boundary
        self._segment_bytes = 0
        self._segment_signed: int | None = None  # the first signed commit since the last boundary
        self._broken: ChainBroken | None = None  # the first broken link read past (serving_broken_chains)
        self._anchor_checked = False  # the tail was checked against position.json before our first append
        self._empty_warned: int | None = None  # the empty last commit already logged
        self.ledger = ledger if ledger is not None else ledger_for(bucket)
        self._signer: SigningKey | None = None  # ready (its key in the keyring) after the first append
        self._signed_from: int | None = None  # the first signed commit read: no unsigned one after it
        self._partition = partition_of(prefix)  # what the witness knows the log by (None: not witnessed)
        self._witness_lock = threading.Lock()
        self._witnessed = 0  # the last head this log published
        self._witnessed_at = 0.0
        self._unwitnessed: tuple[int, str] | None = None  # a head left for the timer to publish
        self._witness_timer: threading.Timer | None = None
        self._boundaries: list[str] = []  # the SHA-256 of each segment's last commit, as read
        self._started_from: LogIndex | None = None  # the log index this log started from (warm start)
        self._index_seq = 0  # the commit of the latest log index this log started from or wrote
        self._warm_tried = False
        self._page_lock = threading.Lock()
        self._paged: set[int] = set()  # the blocks paged in (warm start)
        self._ahead: tuple[int, int, Future[_Fetched]] | None = None  # (block, pid, its segment being read)
        self._create_s = 0.001  # how long a create of a commit takes here (moving average)
        self._relay: Relay | None = None  # this log's side of the relay (storage.eventstore.relay)
        self._relay_tried = False
        self._relay_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PartitionLog({self.bucket!r}, {self.prefix!r}, tail={self.index.tail_seq})"

    # -- what the recorders ask (each looks past the tail first) ------------

    def max_notification_id(self) -> int | None:
        self.refresh()
        return len(self.index) or None

    def max_tracking_id(self, application_name: str) -> int | None:
        self.refresh()
        return self.index.max_tracking_id(application_name)

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> list[StoredEvent]:
        self.refresh()
        return self.index.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
                             ) -> list[Notification]:
        self.refresh()
        return self.index.select_notifications(start, limit, stop, topics,
                                               inclusive_of_start=inclusive_of_start)

    def select_records(self, start: int, limit: int) -> list[EventRecord]:
        """The records of notifications ``start..`` (at most ``limit``), looking past the tail first as
        ``select_notifications`` does (``projections.replay.read_events`` maps them itself)."""
        self.refresh()
        return self.index.select_records(start, limit)

    def listen(self, event: threading.Event) -> None:
        """Set ``event`` whenever this process appends to the log."""
        self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        self._listeners.discard(event)

    # -- appending -----------------------------------------------------------

    def append(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None = None) -> list[int]:
        """Record one batch as one commit, or with other threads' batches in one commit; return its
        notification ids.

        Group commit: a batch without tracking waits for the tail in a queue; the thread that gets the
        tail writes every batch queued by then as one commit (one create, on a durable folder one
        fsync of the file and one of its folder, for them all), each batch checked on its own (a
        conflicting one raises IntegrityError to its caller alone, the others are committed).

        Raises IntegrityError (an event's version is taken, the batch repeats one,
        or ``tracking`` is not past the application's last), DataError (batch too
        large), OperationalError (the bucket failed).
        """
        if not stored_events and tracking is None:
            return []
        records = [event_record(s.originator_id, s.originator_version, s.topic, s.state)
                   for s in stored_events]
        keys = _keys_of(records, self.prefix)
        settle = None
        if tracking is None:
            relay = self._the_relay()
            if relay is not None:  # another process leads this partition's writers: hand it the batch
                ids, settle = relay.hand_over(records)
                if ids is not None:
                    self._see_own_commit()
                    for listener in list(self._listeners):
                        listener.set()
                    return ids
        track = TrackingRecord(tracking.application_name, tracking.notification_id) if tracking else None
        try:
            return self._append_records(records, keys, track)
        except IntegrityError:
            found = settle() if settle is not None else None  # committed by a leader that went away?
            if found is None:
                raise
            return found

    def _see_own_commit(self) -> None:
        """After a batch another process committed for us (the relay): a thread inside ``pinned()`` sees
        its own appends at once, so it reads past the tail now; any other read does so anyway."""
        depth = getattr(self._pins, "depth", 0)
        if depth:
            self._pins.depth = 0
            try:
                self.refresh()
            finally:
                self._pins.depth = depth

    def append_relayed(self, records: list[EventRecord], token: str) -> list[int]:
        """Commit a batch another process handed this one, its leader (``storage.eventstore.relay``):
        as a batch of this process's, with ``token`` recorded in the commit."""
        return self._append_records(records, _keys_of(records, self.prefix), None, token)

    def _the_relay(self) -> Relay | None:
        if not self._relay_tried:
            with self._relay_lock:
                if not self._relay_tried:
                    self._relay = Relay.for_log(self)
                    self._relay_tried = True
        return self._relay

    def _append_records(self, records: list[EventRecord], keys: Versions,
                        track: TrackingRecord | None, token: str = "") -> list[int]:
        mine = _Batch(records, keys, track, token)
        if track is None:
            with self._queued:
                self._queue.append(mine)
                self._queued.notify_all()
        head: tuple[int, str] | None = None
        while True:
            with self._turn:  # wait until our batch is committed (or refused), or the tail is ours to move
                while mine.result is None and self._committing:
                    self._turn.wait()
                if mine.result is not None:
                    break
                self._committing = True
            try:
                if track is None and self._relay is not None:
                    self._relay.linger(self._create_s, self._queue, self._queued)
                with self._tail_lock:
                    group = [mine] if track is not None else self._take_group()
                    try:
                        with _bucket_errors(self.prefix):
                            head = self._commit(group) or head
                    except BaseException as exc:  # each batch of the group raises it (ours too, if in it)
                        for batch in group:
                            if batch.result is None:
                                batch.result = exc
                        if not isinstance(exc, Exception):
                            raise
            finally:
                with self._turn:
                    self._committing = False
                    self._turn.notify_all()
        if head is not None:
            for listener in list(self._listeners):
                listener.set()
            self._witness_head(*head)
        if isinstance(mine.result, BaseException):
            raise mine.result
        assert mine.result is not None
        return mine.result

    def _take_group(self) -> list[_Batch]:
        """The queued batches this thread commits (at least its own, which is queued): as many as fit
        a commit comfortably; the rest wait for the next thread to get the tail."""
        with self._queue_lock:
            group, size = [], 0
            while self._queue:
                batch = self._queue[0]
                size += batch.size
                if group and (size > _GROUP_BYTES or len(group) >= _GROUP_BATCHES):
                    break
                group.append(self._queue.popleft())
            return group

    def _commit(self, group: list[_Batch]) -> tuple[int, str] | None:
        """Write ``group``'s batches as one commit; set each batch's result. Needs ``_tail_lock``."""
        if self._broken is not None:
            raise self._broken
        locks = _locks_appends(self.bucket)
        lock = self.bucket.exclusive(self.prefix) if locks else contextlib.nullcontext(False)
        with lock as serialized:
            if not self._anchor_checked:
                self._check_anchor()
                self._check_witness()
                self._signer = self.ledger.ready_signer()
                self._anchor_checked = True
            if serialized:  # no other writer that locks can take the next name meanwhile: read up to it
                tail = self.index.tail_seq
                self._catch_up(vouching=True)
                if tail and self.index.tail_seq != tail and self._relay is not None:  # another writer's
                    self._relay.contended()
            return self._create_next(group, serialized=serialized)

    def _create_next(self, group: list[_Batch], *, serialized: bool) -> tuple[int, str] | None:
        """Create the commit after the tail holding ``group``'s batches, reading and checking against
        the commits of any writer that created that name first. Needs ``_tail_lock``."""
        index = self.index
        nonce = os.urandom(8).hex()  # this commit's own: another writer's identical batch differs
        losses = 0  # creates lost to other writers in a row
        while True:
            group = self._checked(group)
            if not group:
                return None
            records = [record for batch in group for record in batch.records]
            track = group[0].track
            commit = Commit(index.tail_seq + 1, len(index) + 1, index.tail_sha, records, track,
                            _nonce_with_tokens(nonce, group))
            if self._signer is not None:
                commit, data = signed_commit(self.prefix, commit, self._signer)
            else:
                data = encode_commit(commit)
            if len(data) > MAX_COMMIT_BYTES:
                if len(group) > 1:  # together too large: the first alone, the others queued again
                    with self._queue_lock:
                        self._queue.extendleft(reversed(group[1:]))
                    group = group[:1]
                    continue
                raise DataError(f"a batch of {len(records)} events encodes to {len(data)} bytes "
                                f"(at most {MAX_COMMIT_BYTES}): save fewer events at once")
            name = commit_name(self.prefix, commit.seq)
            started = time.perf_counter()
            try:
                self.bucket.create(name, data)
            except AlreadyExists:
                self._timed_create(started)
                winner = self._read(name)
                if not winner and not self._replace_empty(commit.seq, data):
                    continue  # another writer replaced it first: read theirs
                if winner and winner != data:  # someone else's commit: take it in, check again
                    if commit.seq > 1 and self._relay is not None:  # several writers: elect one (relay)
                        self._relay.contended()
                    self._add([winner], [decode_commit(winner)], vouched=True)
                    losses += 1
                    leads = self._relay is not None and self._relay.leading  # it carries the others' batches
                    if not serialized and not leads:  # (serialized: a writer that does not lock)
                        self._back_off(losses)
                    self._catch_up(vouching=True)
                    continue
                # else our own write (the nonce is ours), reported lost and retried by the client
            self._timed_create(started)
            self._add([data], [commit], signed_here=True)
            first = commit.first_id
            for batch in group:
                batch.result = list(range(first, first + len(batch.records)))
                first += len(batch.records)
            return commit.seq, index.tail_sha

    def _timed_create(self, started: float) -> None:
        self._create_s += (time.perf_counter() - started - self._create_s) / 8

    def _back_off(self, losses: int) -> None:
        """After ``losses`` creates lost in a row to other writers, wait a random while (up to ``2**losses``
        creates' time, at most ``_BACKOFF_MAX_S``) before reading their commits and trying again.

        Several processes appending to one partition race for each commit name; the one that just won
        knows the tail and is already writing the next. Trying again at once mostly loses again (a
        wasted create, and on a folder a wasted fsync, per loser per commit); waiting lets the winner's
        next commits land, and the loser then reads them in one catch-up and tries once. The jitter
        keeps the losers from coming back together."""
        limit = min(self._create_s * 2 ** min(losses, _BACKOFF_CREATES), _BACKOFF_MAX_S)
        time.sleep(random.uniform(0, limit))

    def _checked(self, group: list[_Batch]) -> list[_Batch]:
        """The batches of ``group`` that may be committed now; each other one gets its IntegrityError."""
        kept: list[_Batch] = []
        taken: Versions = {}
        for batch in group:
            try:
                self.index.check(batch.keys, batch.track)
                if any(versions & taken.get(aggregate, _NONE) for aggregate, versions in batch.keys.items()):
                    raise IntegrityError(f"another batch saved at the same moment holds a version of this "
                                         f"one: {self.prefix}")
            except IntegrityError as exc:
                batch.result = exc
                continue
            for aggregate, versions in batch.keys.items():
                taken.setdefault(aggregate, set()).update(versions)
            kept.append(batch)
        return kept

    def _replace_empty(self, seq: int, data: bytes) -> bool:
        """Put ``data`` in place of commit ``seq``, found empty (see the module's docstring): True if
        we did, False if another writer replaced it first. DataError if a commit follows it."""
        self._check_empty_is_last(seq)
        name = commit_name(self.prefix, seq)
        current, stat = self.bucket.read_with_stat(name)
        if current:
            return False
        if not stat.generation:
            raise DataError(f"{name} is empty and has no generation to replace it by")
        try:
            self.bucket.write(name, data, if_generation_match=stat.generation)
        except PreconditionFailed:
            return False
        _log.warning("%s was empty (a commit lost to a power loss on a bucket without fsync): "
                     "replaced by a new commit", name)
        return True

    def _check_empty_is_last(self, seq: int) -> None:
        """Commit ``seq`` is empty: raise DataError unless it is the last (then it is taken as absent)."""
        name = commit_name(self.prefix, seq)
        try:
            self._read(commit_name(self.prefix, seq + 1))
        except ObjectNotFound:
            if self._empty_warned != seq:
                self._empty_warned = seq
                _log.warning("%s is empty (a commit lost to a power loss on a bucket without fsync): "
                             "read as absent; the next append replaces it", name)
            return
        raise DataError(f"{name} is empty but commit {seq + 1} follows it: the events of commit {seq} are "
                        "lost or were removed; run `tune admin audit`")

    def _check_anchor(self) -> None:
        """Before this log's first append: raise ChainBroken if the tail it would link to is not the
        commit that position.json anchored (edited), or that commit is gone. Needs ``_tail_lock``.

        Only an events log has views (and so an anchor); no position.json, or one without a commit
        (written before anchors existed, or a broken one: the audit names it), checks nothing.
        """
        partition = self.prefix.removesuffix("/events/")
        try:
            has_views = partition != self.prefix and events_prefix(partition) == self.prefix
        except ValueError:
            has_views = False
        if not has_views:
            return
        try:
            anchor = msgspec.json.decode(self._read(position(partition)))
        except (ObjectNotFound, msgspec.DecodeError):
            anchor = None
        seq = anchor.get("commit") if isinstance(anchor, dict) else None
        sha = anchor.get("commit_sha256") if isinstance(anchor, dict) else None
        if isinstance(seq, int) and seq >= 1 and isinstance(sha, str):
            if seq > self.index.tail_seq:
                self._catch_up()  # another process appended and projected since we looked
            if seq > self.index.tail_seq:
                raise ChainBroken(self.prefix, self.index.tail_seq + 1, "missing",
                                  f"{position(partition)} was made from commit {seq}, the log ends at "
                                  f"commit {self.index.tail_seq}: the last commits were removed")
            found = (self.index.tail_sha if seq == self.index.tail_seq
                     else sha256_hex(self._read(commit_name(self.prefix, seq))))
            if found != sha:
                raise ChainBroken(self.prefix, seq, "edited",
                                  f"{commit_name(self.prefix, seq)} is not the commit "
                                  f"{position(partition)} was made from (its SHA-256 differs): "
                                  "refusing to link a new commit to it")

    def _check_witness(self) -> None:
        """Before this log's first append: raise ChainBroken if the witness saw a commit past our tail
        (the log was rolled back), or saw the latest commit it holds of ours with another hash (forged).
        Needs ``_tail_lock``. A witness that cannot be read is warned about, not waited for."""
        witness, partition = self.ledger.witness(), self._partition
        if witness is None or partition is None:
            return
        self._catch_up()
        tail = self.index.tail_seq
        try:
            seqs = list(witness.seqs(partition, from_seq=tail - max(witness.every_commits, SEGMENT_COMMITS)))
            if seqs and seqs[-1] > tail:
                raise ChainBroken(self.prefix, tail + 1, "rolled back",
                                  f"the witness ({witness.bucket.url}) saw commit {seqs[-1]} of {partition}, "
                                  f"the log ends at commit {tail}: its last commits were removed "
                                  "(rolled back); refusing to append")
            if seqs:
                seq = seqs[-1]
                held = witness.read(partition, seq).sha256
                found = self.index.tail_sha if seq == tail else sha256_hex(
                    self._read(commit_name(self.prefix, seq)))
                if found != held:
                    raise ChainBroken(self.prefix, seq, "forged",
                                      f"{commit_name(self.prefix, seq)} is not the commit the witness "
                                      f"({witness.bucket.url}) saw at {seq} (its SHA-256 differs): the log "
                                      "was rewritten; refusing to append")
        except (BucketError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("could not check %s against the witness %s: %s", self.prefix, witness, exc)

    # -- the witness ----------------------------------------------------------

    def _witness_head(self, seq: int, sha: str) -> None:
        """Publish head ``(seq, sha)`` if one is due (``Witness.every_commits``), else leave it to a timer
        (``every_s``). A witness that fails is logged: the commit is made."""
        witness, partition = self.ledger.witness(), self._partition
        if witness is None or partition is None:
            return
        with self._witness_lock:
            if seq <= self._witnessed:
                return
            if seq - self._witnessed < witness.every_commits:
                self._unwitnessed = (seq, sha)
                if self._witness_timer is None:
                    self._witness_timer = threading.Timer(witness.every_s, self._witness_late, (witness,))
                    self._witness_timer.daemon = True
                    self._witness_timer.start()
                return
            self._publish(witness, partition, seq, sha)

    def _witness_late(self, witness: Witness) -> None:
        with self._witness_lock:
            self._witness_timer = None
            if self._unwitnessed is not None and self._partition is not None:
                self._publish(witness, self._partition, *self._unwitnessed)

    def _publish(self, witness: Witness, partition: str, seq: int, sha: str) -> None:
        """Needs ``_witness_lock``."""
        try:
            witness.publish(partition, seq, sha, self._signer)
        except BucketError as exc:
            _log.warning("could not publish head %d of %s to the witness %s: %s",
                         seq, partition, witness, exc)
            return
        self._witnessed, self._unwitnessed = seq, None

    def commit_of(self, notification_id: int) -> tuple[int, str] | None:
        """``(sequence number, SHA-256 of its bytes)`` of the commit holding ``notification_id``, as this
        process read it (None: not read yet). The tail's hash is known; an earlier one is read again."""
        with self._tail_lock:
            seq = self.index.commit_of(notification_id)
            if seq is None:
                return None
            if seq == self.index.tail_seq:
                return seq, self.index.tail_sha
        with _bucket_errors(self.prefix):
            return seq, sha256_hex(self._read(commit_name(self.prefix, seq)))

    # -- reading past the tail --------------------------------------------------

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Read past the tail once, then let this thread's reads skip that look until the block ends.

        For a writer that reads many aggregates and then appends one commit (the ledger): each
        read would otherwise probe the bucket for the next commit (a failed open on a folder, a
        GET on GCS). Another process's commit that lands meanwhile is not looked for (other
        threads' reads may still bring it in: the index is shared), but the append meets it
        (the commit's name is taken) and raises IntegrityError if it conflicts, as any stale
        read would. This thread's own appends are seen at once.
        """
        self.refresh()
        depth = getattr(self._pins, "depth", 0)
        self._pins.depth = depth + 1
        try:
            yield
        finally:
            self._pins.depth = depth

    def refresh(self) -> None:
        """Read every commit written (by anyone) since the last look.

        Callers that arrive while another thread refreshes wait for it, then
        look again only if that refresh began before they asked. Inside ``pinned()``
        this thread does not look again.
        """
        if self._broken is not None and not getattr(_serving_broken, "depth", 0):
            raise self._broken
        if getattr(self._pins, "depth", 0):
            return
        asked_after = self._refreshes_started
        with self._tail_lock:
            if self._refreshes_done > asked_after:
                return
            self._refreshes_started += 1
            ticket = self._refreshes_started
            with _bucket_errors(self.prefix):
                self._catch_up()
            self._refreshes_done = ticket
        if self._broken is not None and not getattr(_serving_broken, "depth", 0):
            raise self._broken

    def _catch_up(self, *, vouching: bool = False) -> None:
        """Read past the tail until a name is missing. Needs ``_tail_lock``.

        At a segment boundary, first try the whole next segment; else read the
        next commit. A remote bucket found far behind lists the commit names up
        to the next boundary and reads them several at a time.

        ``vouching``: for an append, which will link to the tail reached; read the commits by name
        (never listing; a remote bucket ``_TAIL_WINDOW`` names at once) and check each stretch's hash
        links and its last signature only (``_add``'s ``vouched``).
        """
        probes = 0
        if not self._warm_tried:
            self._warm_tried = True
            if self.index.tail_seq == 0 and not getattr(_serving_broken, "depth", 0):
                self._start_from_index()
        while True:
            if self.index.tail_seq % SEGMENT_COMMITS == 0 and self._read_segments():
                continue
            if vouching:
                if self._read_stretch():
                    continue
                return
            ahead = SEGMENT_COMMITS - self.index.tail_seq % SEGMENT_COMMITS  # to the next boundary
            if self.read_workers > 1:
                ahead = min(ahead, _PROBES_BEFORE_LISTING - probes)
            found, stop = self._read_next(ahead)
            probes += found
            if stop == "missing":
                return
            if stop == "empty":
                self._check_empty_is_last(self.index.tail_seq + 1)
                return
            if self.read_workers > 1 and probes >= _PROBES_BEFORE_LISTING:
                self._read_listed()
                probes = 0  # listed: list again only after as many probes found commits again

    def _read_stretch(self) -> bool:
        """Read the commits after the tail by name, up to the next segment boundary or the first name
        missing (a remote bucket ``_TAIL_WINDOW`` names at once), and index them as one stretch
        (``_add(vouched=True)``). True if it reached the boundary: more may follow."""
        tail = self.index.tail_seq
        room = SEGMENT_COMMITS - tail % SEGMENT_COMMITS
        window = _TAIL_WINDOW if self.read_workers > 1 else 1
        lines: list[bytes] = []
        stop: bytes | None = None  # what ended the stretch: None (a missing name) or b"" (an empty commit)
        while len(lines) < room:
            first = tail + 1 + len(lines)
            count = min(window, room - len(lines))
            names = [commit_name(self.prefix, seq) for seq in range(first, first + count)]
            read = list(_read_many_or_none(self.bucket, names, workers=self.read_workers))
            found = list(itertools.takewhile(bool, read))
            lines.extend(found)  # type: ignore[arg-type]
            if len(found) < len(read):
                stop = read[len(found)]
                break
        self._add(lines, [decode_commit(data) for data in lines], vouched=True)
        if stop == b"":
            self._check_empty_is_last(self.index.tail_seq + 1)
        return len(lines) == room

    def _read_next(self, count: int) -> tuple[int, str | None]:
        """Read up to ``count`` commits after the tail, a name at a time, and add them together (so that a
        verdict kept for the last of them spares checking their signatures: ``_add``); return how many,
        and why it stopped short: ``"missing"`` (no next commit), ``"empty"`` (an empty one), or None."""
        lines: list[bytes] = []
        commits: list[Commit] = []
        stop: str | None = None
        try:
            for seq in range(self.index.tail_seq + 1, self.index.tail_seq + 1 + count):
                try:
                    data = self._read(commit_name(self.prefix, seq))
                except ObjectNotFound:
                    stop = "missing"
                    break
                if not data:
                    stop = "empty"
                    break
                commits.append(decode_commit(data))
                lines.append(data)
        except BaseException:
            self._add(lines, commits)  # those read before the failure, as when added one by one
            raise
        self._add(lines, commits)
        return len(lines), stop

    def _read_listed(self) -> None:
        """Read the listed commits after the tail, up to the next segment boundary, stopping at a gap."""
        tail = self.index.tail_seq
        wanted = SEGMENT_COMMITS - tail % SEGMENT_COMMITS
        names: list[str] = []
        for name in self.bucket.list(self.prefix, start_offset=commit_name(self.prefix, tail + 1)):
            if len(names) == wanted or seq_of(self.prefix, name) != tail + 1 + len(names):
                break  # enough, a gap (a listing may miss a name being created), or past the commits
            names.append(name)
        lines = list(read_many(self.bucket, names, workers=self.read_workers))
        lines = list(itertools.takewhile(bool, lines))  # an empty commit: _catch_up looks at it alone
        self._add(lines, [decode_commit(data) for data in lines])

    def _read_segments(self) -> bool:
        """Add the whole segments that follow the (aligned) tail; False if there is none that fits.

        A folder probes for the next one; a remote bucket lists the next few and
        reads them, each with its last commit object, several at a time.
        """
        first = self.index.tail_seq + SEGMENT_COMMITS
        lasts = [first]
        if self.read_workers > 1:
            lasts = []
            start = segment_name(self.prefix, first)
            for name in self.bucket.list(f"{self.prefix}segments/", start_offset=start):
                last = first + len(lasts) * SEGMENT_COMMITS
                if name != segment_name(self.prefix, last) or len(lasts) == self.read_workers:
                    break
                lasts.append(last)
        names = [name for last in lasts
                 for name in (segment_name(self.prefix, last), commit_name(self.prefix, last))]
        reads = _read_many_or_none(self.bucket, names, workers=self.read_workers)  # lazy for one worker
        added = False
        for packed in reads:
            if packed is None or not self._add_segment(packed, next(reads)):
                break
            added = True
        return added

    def _add_segment(self, packed: bytes, last_commit: bytes | None) -> bool:
        """Add a segment that follows the tail, if it fits.

        It fits when its commits link by hash from our tail to the bytes of the
        real last commit object (``last_commit``): then each one is exactly that
        commit object.
        """
        tail = self.index.tail_seq
        name = segment_name(self.prefix, tail + SEGMENT_COMMITS)
        try:
            last_sha = sha256_hex(last_commit) if last_commit is not None else ""
            segment_sha = sha256_hex(packed)
            sealed, first_signed = self._sealed(segment_sha, packed, None, tail + SEGMENT_COMMITS, last_sha)
            if sealed is not None:  # these bytes were verified here, their last commit hashing to last_sha
                ends = list(itertools.accumulate([len(self.index), *(len(c.events) for c in sealed)]))
                self._check_places(sealed, tail + 1, ends, self.index.tail_sha)
                self._note_signed(first_signed)
                self.index.add(sealed, [*itertools.repeat("", SEGMENT_COMMITS - 1), last_sha])
                self._boundaries.append(last_sha)
                self._segment = None
                return True
            lines, commits = decode_segment(packed)
            if len(lines) != SEGMENT_COMMITS:
                raise ValueError(f"{len(lines)} commits, not {SEGMENT_COMMITS}")
            shas = sha256_hexes(lines)
            if [commit.prev_sha256 for commit in commits] != [self.index.tail_sha, *shas[:-1]]:
                raise ValueError("its commits do not follow each other by hash")
            if last_commit != lines[-1]:
                raise ValueError("its last commit differs from the commit object")
            self._verify_segment(commits, shas[-1], segment_sha)
        except ValueError as exc:  # msgspec's decode errors are ValueErrors too
            _log.warning("ignoring segment %s (%s); reading its commits one by one", name, exc)
            return False
        self.index.add(commits, shas)
        self._boundaries.append(shas[-1])
        self._segment = None
        return True

    def _verify_segment(self, commits: list[Commit], last_sha: str, segment_sha: str | None = None) -> None:
        """Check every signature of a segment (ValueError naming the first that fails), once per machine:
        the verdict is kept by the hash of its last commit, which pins every commit before it
        (``storage.eventstore.verified``), with ``segment_sha``, the hash of the segment object they
        came from (``_sealed``)."""
        verified = self.ledger.verified_segments()
        if verified is None:
            return
        last = commits[-1].seq
        first_signed = verified.get(self.prefix, last, last_sha)
        if first_signed == UNKNOWN:
            for commit in commits:
                broken = self._bad_signature(commit)
                if broken is not None:
                    raise ValueError(str(broken))
            first_signed = next((c.seq for c in commits if c.sig), None)
        verified.add(self.prefix, last, last_sha, first_signed, segment_sha)
        if first_signed is not None and self._signed_from is None:
            self._signed_from = first_signed

    def _add(self, lines: list[bytes], commits: list[Commit], *, signed_here: bool = False,
             vouched: bool = False) -> None:
        """Index commits read one by one (``lines``: their bytes), and collect them for a segment.

        ``signed_here``: the commits are this log's own, just signed with its key; their signatures are
        not checked again (a verify costs three signs).

        ``vouched``: the commits an append reads to reach the tail it links to. Every hash link is
        checked, and every unsigned commit, but of the signed ones only the last's signature is
        verified: it covers the hash of the commit before it, which its writer verified before linking
        to it (a writer verifies the tail it links to), and so on back, so a commit edited or forged
        anywhere in the stretch breaks a link or that last signature. When the last one fails, every
        signature is checked to name the first that does not verify, as a reader would."""
        if not lines:
            return
        shas = sha256_hexes(lines)
        good, broken, checked = self._first_bad(commits, shas, signed_here=signed_here, vouched=vouched)
        if broken is not None and vouched and 0 < good == len(commits) - 1 and \
                commits[good].prev_sha256 == shas[good - 1]:
            good, broken, checked = self._first_bad(commits, shas, signed_here=False, vouched=False)
        if broken is not None and getattr(_serving_broken, "depth", 0):
            if self._broken is None:
                self._broken = broken
            _log.error("%s (read past: serving_broken_chains)", self._broken)
            broken, good = None, len(commits)
            self._segment = None  # never pack a segment of a broken chain
        self.index.add(commits[:good], shas[:good])
        bounds = [sha for commit, sha in zip(commits[:good], shas[:good], strict=False)
                  if commit.seq % SEGMENT_COMMITS == 0]
        self._boundaries.extend(bounds)
        if checked >= _TAIL_VERDICT_MIN and broken is None and self._broken is None:
            self._keep_tail_verdict()
        if self._broken is None:
            for data, commit, sha in zip(lines[:good], commits[:good], shas[:good], strict=True):
                self._collect_for_segment(commit, data, sha)
            if bounds and self._index_due():
                self._write_index()
        if broken is not None:
            raise broken

    def _first_bad(self, commits: list[Commit], shas: list[str], *, signed_here: bool,
                   vouched: bool) -> tuple[int, ChainBroken | None, int]:
        """How many of ``commits`` (``shas``: their hashes) may be indexed, why the next may not, and how
        many signatures were checked. A verdict kept on this machine for one of them (``_vouched``)
        spares checking the signatures up to it."""
        check_all = not vouched or self.ledger.keyring() is None
        kept, first_signed = (-1, None) if signed_here else self._vouched(commits, shas)
        last = len(commits) - 1
        checked = 0
        for i, (commit, prev_sha) in enumerate(zip(commits, [self.index.tail_sha, *shas[:-1]], strict=True)):
            broken: ChainBroken | None = None
            if commit.prev_sha256 != prev_sha:
                broken = self._broken_link(commit)
            elif i < kept:
                pass
            elif i == kept:
                self._note_signed(first_signed)
            elif signed_here or (commit.sig and i < last and not check_all):
                if commit.sig and (self._signed_from is None or commit.seq < self._signed_from):
                    self._signed_from = commit.seq
            else:
                broken = self._bad_signature(commit)
                checked += 1
            if broken is not None:
                return i, broken, checked
        return len(commits), None, checked

    # -- warm starts (storage.eventstore.log_index) -----------------------------

    def _index_due(self) -> bool:
        """Whether the tail (a segment boundary) is far enough past the latest log index known here for a
        new one (``INDEX_SPACING``)."""
        tail, latest = self.index.tail_seq, self._index_seq
        return tail - latest >= max(SEGMENT_COMMITS, latest // INDEX_SPACING)

    def _write_index(self) -> None:
        """Write the log index at the tail (signed), then remove all but the latest KEPT_LOG_INDEXES.
        Only a log that signs its commits writes one; a failure is logged (an index is only a cache)."""
        if self._signer is None or getattr(_serving_broken, "depth", 0):
            return
        signed = sign_index(self.prefix, self.index.log_index(list(self._boundaries), self._signed_from),
                            self._signer)
        name = index_name(self.prefix, signed.seq)
        try:
            with contextlib.suppress(AlreadyExists):
                self.bucket.create(name, encode_index(signed))
            self._index_seq = signed.seq
            names = list(self.bucket.list(indexes_prefix(self.prefix)))
            for old in names[:-KEPT_LOG_INDEXES]:
                with contextlib.suppress(ObjectNotFound):
                    self.bucket.delete(old)
        except BucketError as exc:
            _log.warning("could not write log index %s: %s", name, exc)

    def _start_from_index(self) -> None:
        """Start an empty log from the latest log index that verifies (none: read every commit)."""
        keyring = self.ledger.keyring()
        if keyring is None:
            return
        names = list(self.bucket.list(indexes_prefix(self.prefix)))
        for name in reversed(names[-KEPT_LOG_INDEXES:]):
            try:
                found = decode_index(self._read(name))
                if index_name(self.prefix, found.seq) != name:
                    raise ValueError(f"it holds the index at commit {found.seq}")
                bounds = found.seq // SEGMENT_COMMITS
                if len(found.commit_events) != found.seq or len(found.boundaries) != bounds:
                    raise ValueError("its commits or boundaries do not match its commit")
                if found.seq % SEGMENT_COMMITS == 0 and found.boundaries[-1] != found.sha256:
                    raise ValueError("its last boundary is not its commit")
                verdict = check_index(self.prefix, found, keyring)
                if verdict != "ok":
                    raise ValueError(f"its signature: {verdict}")
                self.index.start_from(found)
            except ObjectNotFound:
                continue  # removed meanwhile: a newer one was written
            except ValueError as exc:
                _log.warning("ignoring log index %s (%s)", name, exc)
                continue
            self._boundaries = list(found.boundaries)
            self._signed_from = found.signed_from
            self._started_from = found
            self._index_seq = found.seq
            self.index.fault = self._page_in
            return

    def _page_in(self, positions: list[int], sequential: bool = False) -> None:
        """Read and verify the segments holding the events at ``positions`` (before the log index);
        ``sequential``: a page of notifications, the next segment is read ahead (``_read_ahead``)."""
        started = self._started_from
        if started is None:
            return
        with self._page_lock, _bucket_errors(self.prefix):
            block_end = -1  # positions below this are in the segment just paged in
            block = -1
            for position in sorted(positions):
                if position < block_end:
                    continue
                seq = self.index.commit_of(position + 1)
                if seq is None or seq > started.seq:
                    continue
                block = (seq - 1) // SEGMENT_COMMITS
                ahead = self._take_ahead(block)
                if sequential and self.read_workers > 1:
                    self._read_ahead(started, block + 1)
                block_end = self._page_in_block(started, block, ahead)
                self._paged.add(block)

    def _read_ahead(self, started: LogIndex, block: int) -> None:
        """Start reading, hashing and inflating the segment of ``block`` in a thread (each of which lets
        other threads run), so that a replay paging through the notifications of a remote bucket folds
        one segment while the next one is on its way; ``_page_in_block`` takes it. Needs ``_page_lock``.

        Not on a folder (``_page_in`` asks only with several read workers): there a read takes
        microseconds, and the thread, needing the GIL between its steps while the fold holds it, was
        seldom done in time (the replay waited on it: 0.87x SQLite at 10,000 events against 0.96x
        without, the same minutes)."""
        last = (block + 1) * SEGMENT_COMMITS
        if last > started.seq or block in self._paged:
            return
        self._ahead = (block, os.getpid(), _pool(1).submit(self._fetch_segment, last))

    def _fetch_segment(self, last: int, *, inflate: bool = True) -> _Fetched:
        """The segment ending at commit ``last``, its SHA-256 and, with ``inflate``, its lines (None: not
        inflated, or it does not inflate)."""
        packed = self._read(segment_name(self.prefix, last))
        lines: bytes | None = None
        if inflate:
            with contextlib.suppress(ValueError):
                lines = inflate_segment(packed)
        return packed, sha256_hex(packed), lines

    def _take_ahead(self, block: int) -> Future[_Fetched] | None:
        """The segment of ``block`` being read ahead, if it is (another is dropped). Needs ``_page_lock``."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == block and ahead[1] == os.getpid():  # (a fork's child: no thread)
            return ahead[2]
        return None

    def _page_in_block(self, started: LogIndex, block: int, ahead: Future[_Fetched] | None = None) -> int:
        """Put the events of commits ``block * SEGMENT_COMMITS + 1 ..`` (at most one segment, not past
        the log index) in the index; return the position after them. ChainBroken if they are not the
        commits the log index pinned. ``ahead``: its segment, being read ahead."""
        first = block * SEGMENT_COMMITS + 1
        last = min(first + SEGMENT_COMMITS - 1, started.seq)
        prev_sha = started.boundaries[block - 1] if block else ""
        last_sha = started.boundaries[block] if block < len(started.boundaries) else started.sha256
        ends = self.index.commit_ends(first - 1, last)
        commits: Sequence[Commit | SealedCommit] | None = None
        if last % SEGMENT_COMMITS == 0:
            try:
                packed, segment_sha, inflated = ahead.result() if ahead else self._fetch_segment(last,
                                                                                                inflate=False)
                sealed, first_signed = self._sealed(segment_sha, packed, inflated, last, last_sha)
                if sealed is not None:
                    self._check_places(sealed, first, ends, prev_sha)
                    self._note_signed(first_signed)
                    commits = sealed
                else:
                    lines, full = decode_segment(inflated if inflated is not None else packed)
                    self._check_block(lines, full, first, ends, prev_sha, last_sha, segment_sha)
                    commits = full
            except (ObjectNotFound, ValueError) as exc:
                if not isinstance(exc, ObjectNotFound):
                    _log.warning("ignoring segment %s (%s); reading its commits one by one",
                                 segment_name(self.prefix, last), exc)
                commits = None
        if commits is None:
            names = [commit_name(self.prefix, seq) for seq in range(first, last + 1)]
            lines = list(read_many(self.bucket, names, workers=self.read_workers))
            try:
                commits = [decode_commit(data) for data in lines]
                self._check_block(lines, commits, first, ends, prev_sha, last_sha)
            except ValueError as exc:
                raise ChainBroken(self.prefix, first, "edited",
                                  f"commits {first}..{last} are not those the log index at commit "
                                  f"{started.seq} pinned: {exc}") from exc
        self.index.fill(ends[0], [event for commit in commits for event in commit.events])
        return ends[-1]

    def _check_block(self, lines: list[bytes], commits: list[Commit], first: int, ends: list[int],
                     prev_sha: str, last_sha: str, segment_sha: str | None = None) -> None:
        """ValueError unless ``commits`` are commits ``first..`` with the sizes the index holds, linked by
        hash from ``prev_sha`` to ``last_sha``, and signed as they must be (``segment_sha``: the SHA-256
        of the segment object they came from, kept with the verdict)."""
        self._check_places(commits, first, ends, prev_sha)
        shas = sha256_hexes(lines)
        if [c.prev_sha256 for c in commits[1:]] != shas[:-1] or shas[-1] != last_sha:
            raise ValueError("they do not link by hash between the boundaries the log index pinned")
        self._verify_segment(commits, last_sha, segment_sha)

    @staticmethod
    def _check_places(commits: Sequence[Commit | SealedCommit], first: int, ends: list[int],
                      prev_sha: str) -> None:
        """ValueError unless ``commits`` are commits ``first..`` whose events end at ``ends[1:]`` (the first
        starting after ``ends[0]``), the first one linking to ``prev_sha``."""
        if [c.seq for c in commits] != list(range(first, first + len(ends) - 1)):
            raise ValueError("not the commits expected")
        if [c.first_id for c in commits] != [end + 1 for end in ends[:-1]] or \
                [len(c.events) for c in commits] != [b - a for a, b in itertools.pairwise(ends)]:
            raise ValueError("their events are not where the log index has them")
        if commits[0].prev_sha256 != prev_sha:
            raise ValueError("the first does not link to the commit before it")

    def _sealed(self, segment_sha: str, packed: bytes, lines: bytes | None, last: int, last_sha: str,
                ) -> tuple[list[SealedCommit] | None, int | None]:
        """``(its commits, their first signed seq)`` of segment object ``packed`` of SHA-256 ``segment_sha``
        (``lines``: inflated already, or None), the commits decoded for indexing alone when this machine
        verified those very bytes as the segment ending at commit ``last`` (hash ``last_sha``); else
        ``(None, None)``: check the segment whole.

        A verdict is kept with the hash of the segment object it was reached on
        (``storage.eventstore.verified``): the same bytes hold the same commits, which linked by hash to
        ``last_sha`` and verified, so neither each commit's hash nor a signature is computed again; the
        caller still checks where they sit (``_check_places``), the first one's link included."""
        verified = self.ledger.verified_segments()
        if verified is None:
            return None, None
        first_signed = verified.get_segment(self.prefix, last, last_sha, segment_sha)
        if first_signed == UNKNOWN:
            return None, None
        if lines is None:
            lines = inflate_segment(packed, verified=True)
        commits = decode_sealed_segment(lines)
        if len(commits) != SEGMENT_COMMITS or commits[-1].seq != last:
            raise ValueError(f"{len(commits)} commits ending at {commits[-1].seq if commits else 0}, "
                             f"not {SEGMENT_COMMITS} ending at {last}")
        return commits, first_signed

    def _note_signed(self, first_signed: int | None) -> None:
        """Commits from ``first_signed`` on were verified: no unsigned one may follow them."""
        if first_signed is not None and (self._signed_from is None or first_signed < self._signed_from):
            self._signed_from = first_signed

    def _bad_signature(self, commit: Commit) -> ChainBroken | None:
        """Why ``commit`` may not be served (its signature), or None; nothing is checked without a
        keyring (no root public key known here)."""
        keyring = self.ledger.keyring()
        if keyring is None:
            return None
        name = commit_name(self.prefix, commit.seq)
        if not commit.sig:
            if self._signed_from is not None and commit.seq > self._signed_from:
                return ChainBroken(self.prefix, commit.seq, "unsigned",
                                   f"{name} is not signed, but commit {self._signed_from} before it is: it "
                                   "was written without a writer's key (forged)")
            return None
        verdict = check_signature(self.prefix, commit, keyring)
        if verdict == "unknown key":
            return ChainBroken(self.prefix, commit.seq, verdict,
                               f"{name} is signed with key {commit.key_id or '(none)'}, which no root-signed "
                               "keyring entry holds (forged)")
        if verdict != "ok":
            return ChainBroken(self.prefix, commit.seq, verdict,
                               f"{name}'s signature does not verify with key {commit.key_id}: it was changed "
                               "after it was signed")
        if self._signed_from is None or commit.seq < self._signed_from:
            self._signed_from = commit.seq
        return None

    def _vouched(self, commits: list[Commit], shas: list[str]) -> tuple[int, int | None]:
        """``(i, first signed)``: ``commits[: i + 1]`` were verified on this machine before, by a verdict
        kept for ``commits[i]`` (``storage.eventstore.verified``: it covers the commits of its block up to
        it, whose bytes its hash pins); ``(-1, None)`` if none was. ``commits`` are in one block."""
        verified = self.ledger.verified_segments()
        if verified is not None:
            for i in range(len(commits) - 1, -1, -1):
                first_signed = verified.get(self.prefix, commits[i].seq, shas[i])
                if first_signed != UNKNOWN:
                    return i, first_signed
        return -1, None

    def _keep_tail_verdict(self) -> None:
        """Remember that the commits of the tail's block, up to the tail, verified: the next process here
        checks only the signatures of the commits after it (``_vouched``). Every commit of the block
        before the tail was verified by this log, or vouched for, or signed by it."""
        verified = self.ledger.verified_segments()
        if verified is None or getattr(_serving_broken, "depth", 0):
            return
        seq = self.index.tail_seq
        block_start = (seq - 1) // SEGMENT_COMMITS * SEGMENT_COMMITS + 1
        first_signed = None if self._signed_from is None else max(self._signed_from, block_start)
        verified.add(self.prefix, seq, self.index.tail_sha, first_signed)

    def _broken_link(self, commit: Commit) -> ChainBroken:
        before = commit.seq - 1
        return ChainBroken(self.prefix, before or commit.seq, "edited" if before else "inserted",
                           f"{commit_name(self.prefix, commit.seq)} does not hold the hash of commit "
                           f"{before} as this process read it: commit {before} was changed, "
                           f"or commit {commit.seq} was forged")

    def _collect_for_segment(self, commit: Commit, data: bytes, sha: str) -> None:
        """Keep the bytes of the commits since the last boundary; at the next one, write their segment
        and remember it verified (each of its commits was, when read, or is one this log signed)."""
        seq = commit.seq
        if seq % SEGMENT_COMMITS == 1:
            self._segment, self._segment_bytes, self._segment_signed = [], 0, None
        if self._segment is None:
            return
        self._segment.append(data)
        self._segment_bytes += len(data)
        if self._segment_signed is None and commit.sig:
            self._segment_signed = seq
        if self._segment_bytes > MAX_SEGMENT_BYTES:
            self._segment = None
        elif seq % SEGMENT_COMMITS == 0:
            packed, self._segment = pack_segment(self._segment), None
            created = False
            try:
                self.bucket.create(segment_name(self.prefix, seq), packed)
                created = True
            except AlreadyExists:
                pass  # sealed by another writer: its bytes are hashed when first read (_sealed)
            except BucketError as exc:  # a segment is only a cache: the commits are written
                _log.warning("could not write segment %s: %s", segment_name(self.prefix, seq), exc)
            verified = self.ledger.verified_segments()
            if verified is not None:
                verified.add(self.prefix, seq, sha, self._segment_signed,
                             sha256_hex(packed) if created else None)


_NONE: frozenset[int] = frozenset()


def _keys_of(records: list[EventRecord], prefix: str) -> Versions:
    """Each aggregate's versions in ``records``; IntegrityError if the batch repeats one. (The aggregate is
    looked up once per run of records with the same id object: a save's events share one, and a UUID's
    hash is computed in Python.)"""
    keys: Versions = {}
    last: UUID | str | None = None
    versions: set[int] = set()
    for record in records:
        originator = record.originator_id or record.text_id or ""  # EventRecord.originator()
        if originator is not last:
            versions, last = keys.setdefault(originator, set()), originator
        versions.add(record.originator_version)
    if sum(map(len, keys.values())) < len(records):
        raise IntegrityError(f"a batch repeats an (originator_id, originator_version): {prefix}")
    return keys


def _nonce_with_tokens(nonce: str, group: list[_Batch]) -> str:
    """``nonce``, with the token and first event's offset of each relayed batch of ``group``
    (``<nonce>;<token>:<offset>,...``: ``storage.eventstore.relay.relay_tokens``)."""
    relayed, offset = [], 0
    for batch in group:
        if batch.token:
            relayed.append(f"{batch.token}:{offset}")
        offset += len(batch.records)
    return f"{nonce};{','.join(relayed)}" if relayed else nonce


def _locks_appends(bucket: Bucket) -> bool:
    """Whether appends take the bucket's lock (``Bucket.exclusive``) around "read the tail, create the next
    commit": on a folder written without fsync. There no create is lost and nobody backs off; 8 writer
    processes on one partition ran at 1.5-3x the rate of racing ones (bench_eventstore.py, 2 busy cores).
    With fsync the lock would hold each commit's two fsyncs (its file's, then its folder's), where racing
    writers overlap one's folder fsync with the next one's file fsync: locked ran at 0.3-0.9x the
    racing rate there, so a durable folder races, as GCS (which has no such lock) does."""
    return getattr(bucket, "fsync", True) is False


def read_many(bucket: Bucket, names: Sequence[str], *, workers: int = 1) -> Iterator[bytes]:
    """The bytes of each of ``names``, in order (ObjectNotFound for a missing one); ``workers`` > 1
    reads that many at once."""
    return _map(reader_for(bucket), names, workers)


def _read_many_or_none(bucket: Bucket, names: Sequence[str], *, workers: int) -> Iterator[bytes | None]:
    """``read_many``, with None for a missing name."""
    read = reader_for(bucket)

    def read_or_none(name: str) -> bytes | None:
        try:
            return read(name)
        except ObjectNotFound:
            return None

    return _map(read_or_none, names, workers)


def _map(read: Callable[[str], T], names: Sequence[str], workers: int) -> Iterator[T]:
    if workers <= 1 or len(names) < 2:
        return (read(name) for name in names)
    return _pool(workers).map(read, names)


def io_workers_for(bucket: Bucket) -> int:
    """Threads worth giving ``bucket``'s I/O: several for a remote bucket (each call waits on the
    network); one for a folder or memory, where calls are short and threads only contend for the GIL
    (the ledger metering 20 users on 8 threads ran at half the rate of one thread, on a folder or tmpfs)."""
    from storage.memory import MemoryBucket

    return 1 if isinstance(bucket, _local_bucket_class() | MemoryBucket) else _REMOTE_READERS


def reader_for(bucket: Bucket) -> Callable[[str], bytes]:
    """``bucket.read``, except on a LocalBucket: its ``read`` also hashes the bytes (MD5, for the stat it
    drops), a fifth of a cold replay; ``open_read`` does not."""
    if isinstance(bucket, _local_bucket_class()):
        def read(name: str) -> bytes:
            with bucket.open_read(name) as f:
                return f.read()

        return read
    return bucket.read


def _local_bucket_class() -> type[Bucket]:
    from storage.local import LocalBucket

    return LocalBucket


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="eventstore-read")
        return pool


@contextlib.contextmanager
def _bucket_errors(prefix: str) -> Iterator[None]:
    """Bucket failures surface as the library's OperationalError; undecodable commits as DataError."""
    try:
        yield
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DataError(f"a commit under {prefix} is not a valid commit object: {exc}") from exc
    except BucketError as exc:
        raise OperationalError(f"bucket failed under {prefix}: {exc}") from exc


MAX_SHARED_LOGS = 512
"""Partition logs kept per bucket for sharing; the least recently asked for is dropped first."""

_logs: weakref.WeakKeyDictionary[Bucket, OrderedDict[str, PartitionLog]] = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def partition_log(bucket: Bucket, prefix: str) -> PartitionLog:
    """This process's shared ``PartitionLog`` for ``prefix`` in ``bucket``, while the bucket lives.

    Two logs of one partition in a process are as safe as two processes, so a
    log dropped from the cache (beyond MAX_SHARED_LOGS) costs a re-read only.
    """
    with _logs_lock:
        logs = _logs.setdefault(bucket, OrderedDict())
        log = logs.get(prefix)
        if log is None:
            log = logs[prefix] = PartitionLog(bucket, prefix)
            while len(logs) > MAX_SHARED_LOGS:
                logs.popitem(last=False)
        else:
            logs.move_to_end(prefix)
        return log


def forget_log(bucket: Bucket, prefix: str) -> None:
    """Drop this process's shared logs of ``prefix`` and under it (its snapshots), with the commits
    they hold: what a pass over every partition (the audit) does after each, so that it never holds
    more than one. An Application still holding a log keeps using it; the next one reads it again."""
    with _logs_lock:
        logs = _logs.get(bucket)
        for name in [name for name in logs or () if name.startswith(prefix)]:
            del logs[name]  # type: ignore[index]


def _forget_after_fork() -> None:
    """A forked child has none of the parent's threads: a pool inherited from it would never run a
    task, and a lock held by one of them would never be released. Start the child afresh."""
    global _pools_lock, _logs_lock
    _pools.clear()
    _pools_lock = threading.Lock()
    _logs.clear()
    _logs_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
