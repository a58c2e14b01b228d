"""The eventsourcing infrastructure factory, and the ways to build an Application on a Bucket.

Chosen by ``PERSISTENCE_MODULE=storage.eventstore``. Reads (each may be
prefixed by the application's name, as the library does):

``TUNE_BUCKET``     bucket URL (``file:///abs/path``, ``gs://bucket[/prefix]``, or the URL of a
                    bucket object handed to ``register_bucket``); default ``file://$TUNE_HOME/bucket``
``TUNE_PARTITION``  the partition prefix, ``users/<user_id>/events/`` or ``platform/events/`` (required;
                    ``storage.layout.user_events`` / ``PLATFORM_EVENTS``)
``TUNE_ROLE``, ``TUNE_SIGNING_KEY``, ``TUNE_ROOT_PUBLIC_KEY``, ``TUNE_WITNESS``...
                    how commits are signed and witnessed, for a bucket object no entry point gave a
                    ``Ledger`` (``configure_ledger``): ``storage.eventstore.ledger``. Signing is on
                    by default, with keys under ``$TUNE_HOME/keys/``.

Prefixes used: events at ``<partition>``, snapshots at ``<partition>snapshots/``
(any other ``purpose`` likewise), tracking records at
``<partition>tracking/<application name>/``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    InfrastructureFactoryError,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from domain.ids import check_id
from storage.bucket import Bucket, check_name
from storage.eventstore.ledger import ledger_for
from storage.eventstore.recorders import (
    BucketAggregateRecorder,
    BucketApplicationRecorder,
    BucketProcessRecorder,
    BucketTrackingRecorder,
)
from storage.layout import PLATFORM_EVENTS, user_events
from storage.open import bucket_url_from_env

__all__ = [
    "PERSISTENCE_MODULE",
    "Factory",
    "application_env",
    "check_partition",
    "open_application",
    "open_platform",
    "open_user",
    "register_bucket",
    "resolve_bucket",
]

PERSISTENCE_MODULE = "storage.eventstore"

A = TypeVar("A", bound=Application[Any])


def check_partition(partition: str) -> str:
    """Return ``partition`` if it is a usable prefix (``a/b/`` form), else ValueError."""
    if not isinstance(partition, str) or not partition.endswith("/") or partition == "/":
        raise ValueError(f"a partition is a prefix ending in '/', like {PLATFORM_EVENTS!r}: {partition!r}")
    check_name(partition[:-1])
    return partition


# -- buckets by URL ---------------------------------------------------------------

_buckets: weakref.WeakValueDictionary[str, Bucket] = weakref.WeakValueDictionary()
_buckets_lock = threading.Lock()


def register_bucket(bucket: Bucket) -> str:
    """Make ``resolve_bucket(bucket.url)`` return this very object (while it lives); return the URL.

    Applications built on the same bucket object share one cache of each partition's log.
    """
    with _buckets_lock:
        _buckets[bucket.url] = bucket
    return bucket.url


def _forget_after_fork() -> None:
    global _buckets_lock
    _buckets.clear()
    _buckets_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def resolve_bucket(url: str) -> Bucket:
    """The registered bucket with this URL, else ``storage.open_bucket(url)`` (then registered)."""
    with _buckets_lock:
        bucket = _buckets.get(url)
        if bucket is None:
            from storage.open import open_bucket

            bucket = _buckets[url] = open_bucket(url)
        return bucket


# -- the factory ------------------------------------------------------------------


class Factory(InfrastructureFactory[BucketTrackingRecorder]):
    """Recorders on a partition of a Bucket."""

    TUNE_BUCKET = "TUNE_BUCKET"
    TUNE_PARTITION = "TUNE_PARTITION"
    TUNE_HOME = "TUNE_HOME"

    aggregate_recorder_class = BucketAggregateRecorder
    application_recorder_class = BucketApplicationRecorder
    tracking_recorder_class = BucketTrackingRecorder
    process_recorder_class = BucketProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        url = bucket_url_from_env(self.env)
        partition = self.env.get(self.TUNE_PARTITION)
        if not partition:
            keys = ", ".join(self.env.create_keys(self.TUNE_PARTITION))
            raise InfrastructureFactoryError(f"no event partition: set one of {keys} "
                                             f"(e.g. {PLATFORM_EVENTS!r} or 'users/<user_id>/events/')")
        try:
            self.partition = check_partition(partition)
            self.bucket = resolve_bucket(url)
            ledger_for(self.bucket, env=self.env)  # signing on by default (storage.eventstore.ledger)
        except ValueError as exc:
            raise InfrastructureFactoryError(str(exc)) from exc

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        prefix = self.partition if purpose == "events" else f"{self.partition}{check_id(purpose)}/"
        return self.aggregate_recorder_class(self.bucket, prefix)

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._chosen(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        return cls(self.bucket, self.partition)

    def tracking_recorder(
        self, tracking_recorder_class: type[BucketTrackingRecorder] | None = None
    ) -> BucketTrackingRecorder:
        cls = tracking_recorder_class or self._chosen(self.TRACKING_RECORDER_TOPIC,
                                                      self.tracking_recorder_class)
        if not issubclass(cls, BucketTrackingRecorder):
            raise InfrastructureFactoryError(f"{cls} is not a BucketTrackingRecorder")
        name = self.env.name
        prefix = f"{self.partition}tracking/{check_id(name)}/" if name else f"{self.partition}tracking/"
        return cls(self.bucket, prefix)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._chosen(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        return cls(self.bucket, self.partition)

    def _chosen(self, key: str, default: type[Any]) -> type[Any]:
        topic = self.env.get(key)
        cls = resolve_topic(topic) if topic else default
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise InfrastructureFactoryError(f"{key}={topic!r} is not a subclass of {default.__name__}")
        return cls


# -- applications on a bucket object ----------------------------------------------


def application_env(bucket: Bucket, partition: str, **env: str) -> dict[str, str]:
    """The env that puts an Application's events in ``partition`` of this very ``bucket`` object."""
    return {
        Factory.PERSISTENCE_MODULE: PERSISTENCE_MODULE,
        Factory.TUNE_BUCKET: register_bucket(bucket),
        Factory.TUNE_PARTITION: check_partition(partition),
        **env,
    }


def open_application(app_cls: type[A], bucket: Bucket, partition: str, **env: str) -> A:
    """``app_cls(env=...)`` with its events in ``partition`` of ``bucket`` (extra ``env`` entries win)."""
    return app_cls(env=application_env(bucket, partition, **env))


def open_platform(bucket: Bucket, **env: str) -> Any:
    """The platform application (``domain.applications.PlatformApp``) on ``platform/events/``."""
    from domain.applications import PlatformApp

    return PlatformApp(env=application_env(bucket, PLATFORM_EVENTS, **env))


def open_user(bucket: Bucket, user_id: str, **env: str) -> Any:
    """One user's application (``domain.applications.UserApp(user_id, env=...)``) on their partition."""
    from domain.applications import UserApp

    return UserApp(user_id, env=application_env(bucket, user_events(user_id), **env))
