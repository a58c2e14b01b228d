"""``AggregateCache``: a writer's own up-to-date copies of aggregates, for ``UserApp.meter_usage``.

The ledger meters the same busy jobs every batch. ``AggregateCache`` keeps its own copy of
each aggregate it writes and brings it up to date with the events stored after its version
(other writers': the runner's progress, the API's stop requests), so a busy job is never
replayed or deep-copied per batch. The copies are private to their writer (no other thread
sees them half-changed); ``UserApp.meter_usage`` discards a copy whose save did not happen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate

from domain.base import DomainAggregate

__all__ = ["AggregateCache"]

A = TypeVar("A", bound=DomainAggregate)
_UNKNOWN = object()  # not in the cache (None in the cache: known not to exist, as far as it has read)


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
