"""``Projector``: keeps each partition's views current in the bucket, restart-safe and exactly-once.

It is told which partitions moved (``notify``, called in-process by the writer
or by a change feed, ``storage.changes``); it never lists partitions on a timer. A view
another process wrote first (at our position or past it) is dropped from the ``ViewStore``
this projector feeds, so readers here read the bucket's. A process that folds only its own
commits and leaves the others' to the projector role (``tune run api``) is told of those with
``release`` instead of ``notify``: nothing is read or folded, the views it fed of the partition
are checked against the bucket again (``ViewStore.release``), and views a fold here writes from
a state read before the release are not trusted either.

How the promises are kept:

* Exactly-once: views are never read back and added to. Each is a pure
  function of the partition's log prefix, folded in memory, so an event can
  only count once however often a view is written.
* Restart-safe: on its first touch of a partition after a (re)start the
  projector replays it from position 0 in memory, then writes only the views
  that changed after the position recorded in ``metadata/position.json``
  (written last, after every other view of a catch-up).
* Several projectors on one bucket: a view is written only with a generation
  precondition (create-only for a view not seen before), and never over a
  stored view whose position is already at or past ours; a lost race re-reads
  and compares. Views never move backwards.

What a change costs: a job's state change writes that job's status.json, the page of the
listing's index that holds its row and the index's head (``projections.index``), then
position.json; not the complete listing. The complete listings (``jobs.json``, ``models.json``,
``datasets.json``: the documented layout, kind ``LISTING``) are coalesced when ``coalesce_s`` is
set: written at once if the partition's were not written in the last ``coalesce_s`` seconds,
else deferred until then (``flush_deferred``, which the run loop calls as they fall due and once
more when it stops; a caller that folds with ``catch_up`` alone calls it itself, and ``wait_for``
without a loop writes them at once). Each carries its own position, so a listing may trail
position.json by at most ``coalesce_s``; a restart (which forgets what was deferred) compares
the stored listings' own positions on its first touch and writes those behind, and likewise
writes an index whose head is missing or behind (a bucket written before the index existed).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.application import Application

from projections.partition import INDEX, LISTING, Partition, open_partition
from projections.replay import BATCH, anchor_of, read_events
from projections.store import ViewStore, stored_position
from storage import layout
from storage.bucket import Bucket, ObjectNotFound, PreconditionFailed

__all__ = ["OpenApp", "Projector"]

log = logging.getLogger(__name__)

OpenApp = Callable[[str], Application[Any]]

_MISSING = (0, -1)  # (generation, position) of a view that is not stored


class Projector:
    """Folds notified partitions into their views; one instance per process."""

    def __init__(
        self,
        bucket: Bucket,
        open_app: OpenApp,
        *,
        store: ViewStore | None = None,
        batch: int = BATCH,
        max_partitions: int = 10_000,
        coalesce_s: float = 0.0,
        workers: int = 1,
    ) -> None:
        """``max_partitions``: how many partitions' states stay in memory (least recently used go;
        the next touch replays them from 0, as after a restart); ``coalesce_s``: the least time
        between two writes of a partition's complete listings (0: each change writes them);
        ``workers``: partitions the ``run`` loop folds at once, each by one thread at a time (a
        catch-up mostly waits on the bucket: one by one, a burst of commits to many partitions
        queues each behind the others' writes)."""
        self.bucket = bucket
        self.open_app = open_app
        self.store = store
        self.batch = batch
        self._apps: dict[str, Application[Any]] = {}
        self._parts: OrderedDict[str, Partition] = OrderedDict()
        self.max_partitions = max_partitions
        self._written: dict[str, int] = {}  # partition -> position of its last complete flush
        self._stored: dict[str, tuple[int, int]] = {}  # view name -> (generation, position) last seen
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._changed = threading.Condition()
        self._dirty: set[str] = set()
        self._running = False
        self.writes = 0
        self.coalesce_s = coalesce_s
        self._deferred: dict[str, set[str]] = {}  # partition -> complete listings not written yet
        self._listed_at: dict[str, float] = {}  # partition -> when its listings were last written
        self._released: dict[str, int] = {}  # partition -> how many times it was released
        self.workers = workers
        self._folding: set[str] = set()  # partitions a worker of ``run`` is catching up now
        self._folded_at: dict[str, int] = {}  # partition -> its release count when its state was read

    # -- telling and asking ------------------------------------------------

    def notify(self, partition: str) -> None:
        """Mark ``partition`` as having new events (cheap; the run loop or the next catch-up folds them)."""
        with self._changed:
            self._dirty.add(partition)
            self._changed.notify_all()

    def release(self, partition: str) -> None:
        """Another process committed to ``partition`` and this one will not fold it for that: stop
        trusting the views it fed of it (module docstring)."""
        with self._guard:
            self._released[partition] = self._released.get(partition, 0) + 1
        if self.store is not None:
            self.store.release(partition)

    def partitions(self) -> list[str]:
        """The partitions whose state this process holds (folded here, their views live here)."""
        with self._guard:
            return list(self._parts)

    def position(self, partition: str) -> int:
        """The position every view of ``partition`` reflects in the bucket, as far as this process
        knows (0 before its first complete catch-up here)."""
        return self._written.get(partition, 0)

    def head(self, partition: str) -> int:
        """The partition's last notification id in the event store."""
        return self._app(partition).recorder.max_notification_id() or 0

    def wait_for(self, partition: str, position: int | None = None, timeout: float = 10.0) -> bool:
        """Wait until ``partition``'s views reflect ``position`` (default: its head now); False on timeout.

        Without a running loop the caller's thread catches up itself.
        """
        target = self.head(partition) if position is None else position
        if self.position(partition) >= target:
            return True
        if not self._running:
            self.catch_up(partition)
            self.flush_deferred(partition, force=True)  # no loop would write them later
            return self.position(partition) >= target
        self.notify(partition)
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.position(partition) < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no partition is notified or being folded (False on timeout): whatever this
        process was told of before is folded, and nothing more will be until it is told again."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._dirty or self._folding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # -- folding and writing ----------------------------------------------

    def catch_up(self, partition: str) -> int:
        """Fold the partition's new notifications, write the views they changed; return its position."""
        with self._lock(partition):
            part = self._parts.get(partition)
            first = part is None
            if part is None:
                part = open_partition(partition, anchor_of(self._app(partition)))
            with self._guard:
                self._folded_at[partition] = self._released.get(partition, 0)
            for position, event in read_events(self._app(partition), part.position, batch=self.batch):
                part.apply(position, event)
            names = part.views.take_dirty()
            if first:
                names = self._first_names(part, names)
            self._keep(partition, part)
            try:
                self._flush(part, names)
            finally:
                self._distrust_if_released(partition)
            self._written[partition] = part.position
        with self._changed:
            self._changed.notify_all()
        return part.position

    def _distrust_if_released(self, partition: str) -> None:
        """After views of ``partition`` were fed: if it was released since its state was read, those
        views may miss the commit released for, so they are not trusted (``ViewStore.release``)."""
        with self._guard:
            released = self._released.get(partition, 0) != self._folded_at.get(partition, 0)
        if released and self.store is not None:
            self.store.release(partition)

    def _first_names(self, part: Partition, names: set[str]) -> set[str]:
        """Of a partition replayed from 0 here, the views to write: those changed after the stored
        position.json, complete listings whose own stored position is behind (their writes are
        coalesced: position.json may be ahead of them), and every object of an index whose stored
        head is missing or behind."""
        views = part.views
        written = self._stored_view(layout.position(part.name))[1]
        behind = {n for n in names if views.position_of(n) > written}
        for name in names - behind:
            if views.kind_of(name) == LISTING and self._stored_view(name)[1] < views.position_of(name):
                behind.add(name)
        heads = {views.group_of(n) for n in names if views.kind_of(n) == INDEX} - {None}
        stale = {h for h in heads if h is not None and self._stored_view(h)[1] < views.position_of(h)}
        return behind | {n for n in names if views.group_of(n) in stale}

    def _keep(self, partition: str, part: Partition) -> None:
        """Remember the partition's state as most recently used; let the least recently used go."""
        with self._guard:
            self._parts[partition] = part
            self._parts.move_to_end(partition)
            while len(self._parts) > self.max_partitions:
                gone, _ = self._parts.popitem(last=False)
                self._apps.pop(gone, None)
                self._written.pop(gone, None)
                self._deferred.pop(gone, None)  # its next first touch writes the listings behind

    def _flush(self, part: Partition, names: set[str]) -> None:
        if self.coalesce_s > 0:
            names = self._coalesced(part, names)
        tracking = layout.position(part.name)
        order = part.views.write_order(names - {tracking}) + ([tracking] if tracking in names else [])
        for i, name in enumerate(order):
            try:
                self._write(name, part.views.render(name), part.views.position_of(name), part.name)
            except BaseException:
                part.views.mark_dirty(order[i:])
                raise

    def _coalesced(self, part: Partition, names: set[str]) -> set[str]:
        """``names`` less the complete listings deferred (their partition's were written less than
        ``coalesce_s`` ago), plus those deferred before when they are due now."""
        listings = {n for n in names if part.views.kind_of(n) == LISTING}
        with self._guard:
            deferred = self._deferred.get(part.name, set())
            if not listings and not deferred:
                return names
            now = time.monotonic()
            if now < self._listed_at.get(part.name, -math.inf) + self.coalesce_s:
                self._deferred[part.name] = deferred | listings
                return names - listings
            self._deferred.pop(part.name, None)
            self._listed_at[part.name] = now
        return names | deferred

    def flush_deferred(self, partition: str | None = None, *, force: bool = False) -> int:
        """Write the complete listings deferred by coalescing that are due (all with ``force``), of
        ``partition`` or of every partition; return how many were written."""
        with self._guard:
            now = time.monotonic()
            todo = [
                p
                for p in ([partition] if partition is not None else list(self._deferred))
                if self._deferred.get(p)
                and (force or now >= self._listed_at.get(p, -math.inf) + self.coalesce_s)
            ]
        count = 0
        for p in todo:
            with self._lock(p):
                with self._guard:
                    names = self._deferred.pop(p, set())
                    part = self._parts.get(p)
                    self._listed_at[p] = time.monotonic()
                if part is None or not names:
                    continue
                try:
                    for name in part.views.write_order(names):
                        self._write(name, part.views.render(name), part.views.position_of(name), p)
                        count += 1
                except BaseException:
                    with self._guard:
                        self._deferred.setdefault(p, set()).update(names)
                    raise
                finally:
                    self._distrust_if_released(p)
        return count

    def _write(self, name: str, data: bytes, position: int, partition: str) -> None:
        generation, stored = self._stored.get(name, _MISSING)
        raced = False
        while True:
            if stored >= position:
                # another process wrote this view (as far or further): what this process fed its
                # store may be older than the bucket's, so the store reads it again
                if (raced or stored > position) and self.store is not None:
                    self.store.forget(name)
                return
            try:
                stat = self.bucket.write(name, data, if_generation_match=generation)
            except PreconditionFailed:
                generation, stored = self._stored_view(name)
                raced = True
                continue
            self.writes += 1
            self._stored[name] = (stat.generation, position)
            if self.store is not None:
                self.store.put(name, data, stat.generation, position, partition=partition)
            return

    def _stored_view(self, name: str) -> tuple[int, int]:
        """Read what the bucket holds for a view now: (generation, position), remembered."""
        try:
            data, stat = self.bucket.read_with_stat(name)
        except ObjectNotFound:
            found = _MISSING
        else:
            found = (stat.generation, stored_position(data))
        self._stored[name] = found
        return found

    # -- the background loop ----------------------------------------------

    def run(self, stop: threading.Event, *, sweep_every: float | None = None) -> None:
        """Catch up notified partitions until ``stop`` is set.

        ``sweep_every`` (seconds) also re-checks every partition touched so far, a slow
        backstop for writers in other processes that could not notify.
        """
        self._running = True
        next_sweep = time.monotonic() + sweep_every if sweep_every else None
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="projector") if self.workers > 1 else None
        try:
            while not stop.is_set():
                with self._changed:
                    if not self._dirty - self._folding:
                        self._changed.wait(0.05)
                    todo = self._dirty - self._folding
                    self._dirty -= todo
                if next_sweep is not None and time.monotonic() >= next_sweep:
                    with self._guard:
                        todo |= set(self._parts)
                    next_sweep = time.monotonic() + (sweep_every or 0)
                if pool is None:
                    self._fold_here(todo)
                else:
                    self._hand_out(pool, todo)
                self._flush_due()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            self._flush_due(force=True)
            self._running = False
            with self._changed:
                self._changed.notify_all()

    def start(self, stop: threading.Event, *, sweep_every: float | None = None) -> threading.Thread:
        """``run`` on a daemon thread; returns once the loop is live."""
        thread = threading.Thread(
            target=self.run, args=(stop,), kwargs={"sweep_every": sweep_every}, name="projector", daemon=True
        )
        self._running = True
        thread.start()
        return thread

    def _catch_up_all(self, partitions: Iterable[str]) -> None:
        for partition in sorted(partitions):
            try:
                self.catch_up(partition)
            except Exception:  # the loop must outlive one bad partition; it is retried on the next notify
                log.exception("projector: catching up %s failed", partition)
                time.sleep(0.2)
                with self._changed:
                    self._dirty.add(partition)

    def _fold_here(self, partitions: set[str]) -> None:
        """Catch up ``partitions`` on the loop's own thread, marked as being folded meanwhile."""
        with self._changed:
            self._folding |= partitions
        try:
            self._catch_up_all(partitions)
        finally:
            with self._changed:
                self._folding -= partitions
                self._changed.notify_all()

    def _hand_out(self, pool: ThreadPoolExecutor, partitions: set[str]) -> None:
        """Catch up ``partitions`` on ``pool``; one a worker folds now stays dirty for after it."""
        with self._changed:
            busy = partitions & self._folding
            self._dirty |= busy
            todo = partitions - busy
            self._folding |= todo
        for partition in sorted(todo):
            pool.submit(self._fold_one, partition)

    def _fold_one(self, partition: str) -> None:
        try:
            self._catch_up_all([partition])
        finally:
            with self._changed:
                self._folding.discard(partition)
                self._changed.notify_all()

    def _flush_due(self, *, force: bool = False) -> None:
        try:
            self.flush_deferred(force=force)
        except Exception:  # retried on the next turn (the names stay deferred)
            log.exception("projector: writing the deferred listings failed")
            time.sleep(0.2)

    # -- plumbing -----------------------------------------------------------

    def _app(self, partition: str) -> Application[Any]:
        app = self._apps.get(partition)
        if app is None:
            with self._guard:
                app = self._apps.get(partition) or self.open_app(partition)
                self._apps[partition] = app
        return app

    def _lock(self, partition: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(partition, threading.Lock())

    def forget(self, partition: str) -> None:
        """Drop a partition's in-memory state (the next catch-up replays it from 0, as after a restart)."""
        with self._lock(partition), self._guard:
            self._parts.pop(partition, None)
            self._written.pop(partition, None)
            self._deferred.pop(partition, None)
            self._folded_at.pop(partition, None)
