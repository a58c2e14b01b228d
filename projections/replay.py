"""Reading a partition's events from its eventsourcing Application, and folding them into memory."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper

from domain.transcoder import MsgspecJSONTranscoder
from projections.partition import Anchor, Partition, open_partition
from storage.bucket import Bucket
from storage.eventstore.index import stored_event
from storage.eventstore.log import PartitionLog
from storage.eventstore.recorders import log_of
from storage.layout import PLATFORM, user_of

__all__ = ["BATCH", "anchor_of", "apps_on", "collector_paused", "read_events", "replay"]

BATCH = 500


def read_events(app: Application[Any], after: int = 0, *, batch: int = BATCH) -> Iterator[tuple[int, Any]]:
    """``(notification id, domain event)`` for every notification after ``after``, in order.

    From a bucket log whose mapper neither encrypts nor compresses (and decodes with msgspec), the
    stored records are mapped as they are kept (``PartitionLog.select_records``: a record with a UUID
    and text state is what the mapper reads of a stored event, its state decoded from text), without
    making a notification and the bytes of its state for each: a twentieth of a replay."""
    log = log_of(app)
    mapper = app.mapper
    if log is not None and mapper.cipher is None and mapper.compressor is None and \
            isinstance(mapper.transcoder, MsgspecJSONTranscoder):  # (it decodes text as well as bytes)
        yield from _read_records(log, mapper, after, batch)
        return
    while True:
        notifications = app.recorder.select_notifications(start=after + 1, limit=batch)
        if not notifications:
            return
        for notification in notifications:
            yield notification.id, mapper.to_domain_event(notification)
        after = notifications[-1].id


def _read_records(log: PartitionLog, mapper: Mapper[Any], after: int, batch: int,
                  ) -> Iterator[tuple[int, Any]]:
    to_domain_event = mapper.to_domain_event
    while True:
        records = log.select_records(after + 1, batch)
        if not records:
            return
        for position, record in enumerate(records, after + 1):
            plain = record.originator_id is not None and record.state is not None
            yield position, to_domain_event(record if plain else stored_event(record))  # type: ignore[arg-type]
        after += len(records)


def anchor_of(app: Application[Any]) -> Anchor | None:
    """``PartitionLog.commit_of`` of the application's log (None for a log not kept in a bucket)."""
    log = log_of(app)
    return log.commit_of if log is not None else None


def replay(
    app: Application[Any],
    partition: str,
    *,
    upto: int | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> Partition:
    """The partition's views folded in memory from position 0 (to ``upto``, default the head);
    ``on_event`` sees each event too (e.g. the audit's findings). The cyclic garbage collector is
    paused meanwhile (``collector_paused``)."""
    part = open_partition(partition, anchor_of(app))
    with collector_paused():
        for position, event in read_events(app):
            if upto is not None and position > upto:
                break
            part.apply(position, event)
            if on_event is not None:
                on_event(event)
    return part


class _CollectorPause:
    """Python's cyclic garbage collector off while any replay folds, back to how it was after the last
    of several concurrent ones ends, whatever they raise.

    A fold keeps every view it builds alive, so each full collection walks all of them: at 10,000
    jobs the collector made a rebuild 11.5x the 1,000-job time instead of 10.3x
    (``bench/bench_history.py``). A fold makes no reference cycles worth collecting meanwhile;
    reference counting still frees everything else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


collector_paused = _CollectorPause()
"""``with collector_paused():`` the garbage collector is off for the block (see ``_CollectorPause``)."""


def apps_on(bucket: Bucket) -> Callable[[str], Application[Any]]:
    """``open_app`` for partitions stored in ``bucket`` (``storage.eventstore``): a fresh app per call."""
    from storage.eventstore import open_platform, open_user

    def open_app(partition: str) -> Application[Any]:
        open_partition(partition)  # refuses anything but platform or users/<id>
        if partition == PLATFORM:
            return open_platform(bucket)  # type: ignore[no-any-return]
        return open_user(bucket, user_of(partition))  # type: ignore[no-any-return]

    return open_app
