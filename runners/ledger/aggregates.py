"""Loading and saving a user's Job and Budget aggregates directly, so one save can carry several.

``UserApp`` commands save one aggregate each; the ledger meters many jobs of a user, raises
their alerts and requests their stops in ONE commit per batch, so it acts on the
aggregates (their own methods check every rule) and calls ``Application.save`` once. A
lost race surfaces as eventsourcing's ``RecordConflictError``: reload and try again.

``AggregateCache`` keeps the worker's own copy of each aggregate it writes and brings it up
to date with the events stored after its version (other writers': the runner's progress,
the API's stop requests), so a busy job is never replayed or deep-copied per batch. The
copies are private to the worker (no other thread sees them half-changed); a copy whose
save did not happen is discarded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Recording, project_aggregate

from domain.budget import Budget
from domain.job import Job

__all__ = ["AggregateCache", "last_position", "load_budget", "load_job", "save"]

A = TypeVar("A", Job, Budget)
_UNKNOWN = object()  # not in the cache (None in the cache: known not to exist, as far as it has read)


def load_job(app: Application[Any], job_id: str) -> Job | None:
    """The job as stored now (a fresh object), or None if the partition has no such job."""
    try:
        job = app.repository.get(Job.create_id(job_id))
    except AggregateNotFoundError:
        return None
    return job if isinstance(job, Job) else None


def load_budget(app: Application[Any], user_id: str) -> Budget | None:
    try:
        budget = app.repository.get(Budget.create_id(user_id))
    except AggregateNotFoundError:
        return None
    return budget if isinstance(budget, Budget) else None


def save(app: Application[Any], *aggregates: Job | Budget) -> list[Recording[UUID]]:
    """Save every aggregate with pending events in one commit; what it recorded (empty: nothing)."""
    changed = [a for a in aggregates if a.pending_events]
    return app.save(*changed) if changed else []


def last_position(recordings: list[Recording[UUID]]) -> int | None:
    """The last notification id of a commit's recordings (None: nothing was recorded)."""
    return recordings[-1].notification.id if recordings else None


class AggregateCache:
    """Up-to-date private copies of aggregates by ``(partition key, aggregate id)``, least recent dropped."""

    def __init__(self, maxsize: int = 20_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, UUID], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, app: Application[Any], key: str, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate as stored now; None if there is none (or it is not a ``cls``).

        A cached copy (or a cached absence) is brought up to date with the events stored after it.

        Thread-safe across keys; one key (a user's partition) must be used by one thread at a time.
        """
        slot = (key, aggregate_id)
        with self._lock:
            known = self._items.get(slot, _UNKNOWN)
        if known is _UNKNOWN:
            try:
                aggregate = app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                aggregate = None  # remembered too: a user with no budget is asked about it every batch
        else:
            version = 0 if known is None else known.version
            newer = list(app.repository.event_store.get(originator_id=aggregate_id, gt=version))
            aggregate = project_aggregate(known, newer) if newer else known
        with self._lock:
            self._items[slot] = aggregate
            self._items.move_to_end(slot)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return aggregate if isinstance(aggregate, cls) else None

    def discard(self, key: str, aggregates: list[Any]) -> None:
        """Forget these copies (changed but not saved: the next ``get`` loads them afresh)."""
        with self._lock:
            for aggregate in aggregates:
                self._items.pop((key, aggregate.id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
