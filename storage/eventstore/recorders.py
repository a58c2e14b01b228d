"""The library's recorder interfaces on a partition's commit log in a Bucket.

``BucketAggregateRecorder``   insert_events / select_events (snapshots use one on ``<partition>snapshots/``)
``BucketApplicationRecorder`` + notifications: select_notifications, max_notification_id, subscribe
``BucketTrackingRecorder``    insert_tracking / max_tracking_id, as tracking-only commits of its own log
``BucketProcessRecorder``     an application recorder whose commits also carry the tracking record

Every recorder is built from ``(bucket, prefix)`` and works on the
``PartitionLog`` this process shares for that prefix of that bucket object;
see ``storage.eventstore.log``. The library's ``ProjectionRunner`` works on
them (a view subclasses ``BucketTrackingRecorder``, with the same constructor).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from storage.bucket import Bucket
from storage.eventstore.log import PartitionLog, partition_log

__all__ = [
    "BucketAggregateRecorder",
    "BucketApplicationRecorder",
    "BucketProcessRecorder",
    "BucketRecorder",
    "BucketTrackingRecorder",
    "PollingSubscription",
    "log_of",
    "pinned_reads",
]


class BucketRecorder:
    """What every recorder here holds: the bucket, the prefix and the shared log."""

    def __init__(self, bucket: Bucket, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.log: PartitionLog = partition_log(bucket, prefix)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.bucket!r}, {self.prefix!r})"


def log_of(app: Any) -> PartitionLog | None:
    """The ``PartitionLog`` under an application's recorder (None for a recorder not on a bucket)."""
    log = getattr(app.recorder, "log", None)
    return log if isinstance(log, PartitionLog) else None


def pinned_reads(app: Any) -> contextlib.AbstractContextManager[None]:
    """``PartitionLog.pinned()`` for the application's log (nothing to pin for another recorder)."""
    log = log_of(app)
    return log.pinned() if log is not None else contextlib.nullcontext()


class BucketAggregateRecorder(BucketRecorder, AggregateRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self.log.append(stored_events, kwargs.get("tracking"))
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        return self.log.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)


class BucketApplicationRecorder(BucketAggregateRecorder, ApplicationRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return self.log.append(stored_events, kwargs.get("tracking"))

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
                             ) -> Sequence[Notification]:
        return self.log.select_notifications(start, limit, stop, topics,
                                             inclusive_of_start=inclusive_of_start)

    def max_notification_id(self) -> int | None:
        return self.log.max_notification_id()

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return PollingSubscription(self, gt=gt, topics=topics)


class BucketTrackingRecorder(BucketRecorder, TrackingRecorder):
    def insert_tracking(self, tracking: Tracking) -> None:
        self.log.append((), tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self.log.max_tracking_id(application_name)


class BucketProcessRecorder(BucketTrackingRecorder, BucketApplicationRecorder, ProcessRecorder):
    """Events and the tracking record they answer land in one commit: all or nothing."""


class PollingSubscription(ListenNotifySubscription[BucketApplicationRecorder]):
    """New notifications as they appear: woken at once by appends in this process,
    and polling the bucket for other processes' commits, backing off from
    ``min_interval`` to ``max_interval`` seconds while nothing arrives.
    """

    min_interval = 0.02
    max_interval = 0.5

    def __init__(self, recorder: BucketApplicationRecorder, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        self._log = recorder.log  # before the pull thread starts: it may call stop()
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._log.listen(self._has_been_notified)

    def stop(self) -> None:
        super().stop()
        self._log.unlisten(self._has_been_notified)

    def _loop_on_pull(self) -> None:
        try:
            self._pull()
            interval = self.min_interval
            while not self._has_been_stopped:
                woken = self._has_been_notified.wait(timeout=interval)
                before = self._last_notification_id
                self._pull()
                quiet = not woken and self._last_notification_id == before
                interval = min(interval * 2, self.max_interval) if quiet else self.min_interval
        except BaseException as exc:
            if self._thread_error is None:
                self._thread_error = exc
            self.stop()

