"""Reading a partition's events from its eventsourcing Application, and folding them into memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from eventsourcing.application import Application

from projections.partition import Anchor, Partition, open_partition
from storage.bucket import Bucket
from storage.eventstore.recorders import log_of
from storage.layout import PLATFORM, user_of

__all__ = ["BATCH", "anchor_of", "apps_on", "read_events", "replay"]

BATCH = 500


def read_events(app: Application[Any], after: int = 0, *, batch: int = BATCH) -> Iterator[tuple[int, Any]]:
    """``(notification id, domain event)`` for every notification after ``after``, in order."""
    while True:
        notifications = app.recorder.select_notifications(start=after + 1, limit=batch)
        if not notifications:
            return
        for notification in notifications:
            yield notification.id, app.mapper.to_domain_event(notification)
        after = notifications[-1].id


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
    ``on_event`` sees each event too (e.g. the audit's findings)."""
    part = open_partition(partition, anchor_of(app))
    for position, event in read_events(app):
        if upto is not None and position > upto:
            break
        part.apply(position, event)
        if on_event is not None:
            on_event(event)
    return part


def apps_on(bucket: Bucket) -> Callable[[str], Application[Any]]:
    """``open_app`` for partitions stored in ``bucket`` (``storage.eventstore``): a fresh app per call."""
    from storage.eventstore import open_platform, open_user

    def open_app(partition: str) -> Application[Any]:
        open_partition(partition)  # refuses anything but platform or users/<id>
        if partition == PLATFORM:
            return open_platform(bucket)  # type: ignore[no-any-return]
        return open_user(bucket, user_of(partition))  # type: ignore[no-any-return]

    return open_app
