"""Change feeds: how a process hears that another process committed to a partition.

A ``ChangeFeed`` calls ``on_change(partition)`` (``"platform"``, ``"users/<uid>"``) after a commit
to that partition by any process, at least once, possibly more often or spuriously: a listener
treats it as "look again" (catch up, drop what it cached), never as a fact about one commit.

- ``PollingChangeFeed``: the local folder bucket's feed, and every process's backstop. Every
  ``interval_s`` it asks the head of each partition ``partitions()`` names (on the event store,
  one read of the name after the tail: a miss on a local folder costs a failed ``open``) and
  reports those that moved. What ``partitions()`` names is the caller's: the partitions with live
  views in an API process (``runtime.context.Runtime.live_partitions``), every partition for a
  projector or a dispatcher.
- ``PubSubChangeFeed``: production. The GCS bucket publishes object notifications
  (``OBJECT_FINALIZE``, JSON payload, attribute ``objectId``) to a Pub/Sub topic; each process
  has its own subscription (``pubsub://project/topic/subscription``) and maps each created
  commit object to its partition (``storage.layout.partition_of_commit``; a ``gs://bucket/prefix``
  bucket's prefix is taken off first, objects outside it are ignored). Notifications can be
  late, repeated or (rarely) lost: pair it with a slow ``PollingChangeFeed`` (``both``).

One subscription delivers each message to ONE of its pullers, so processes must not share one:
a subscription name ending in ``*`` (``pubsub://project/topic/api-*``) makes a subscription of
this process's own at start (``own_subscription_name``: the name before the ``*``, the host, the
pid and a random tail; ``create_own_subscription``), deleted by ``close``. A process that dies
without closing leaves it behind; it expires after ``OWN_SUBSCRIPTION_TTL`` without a pull (the
least Pub/Sub allows) and keeps messages ``OWN_SUBSCRIPTION_RETENTION`` (the least) meanwhile.
Each worker of ``tune run api`` (``roles.api``) follows such a subscription (``per_process``).

``open_change_feed(url, ...)``: ``poll`` (or ``poll:<seconds>``) or ``pubsub://...``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from storage import layout

__all__ = [
    "OWN_SUBSCRIPTION_RETENTION_S",
    "OWN_SUBSCRIPTION_TTL_S",
    "ChangeFeed",
    "OnChange",
    "PollingChangeFeed",
    "PubSubChangeFeed",
    "both",
    "create_notification_subscription",
    "create_own_subscription",
    "create_topic",
    "open_change_feed",
    "own_subscription_name",
    "per_process",
]

log = logging.getLogger(__name__)

OnChange = Callable[[str], None]
HeadOf = Callable[[str], int]

OWN_SUBSCRIPTION_TTL_S = 24 * 3600
"""A process's own subscription expires after a day without a pull (Pub/Sub's least TTL)."""
OWN_SUBSCRIPTION_RETENTION_S = 600
"""...and keeps unacknowledged notifications 10 minutes (Pub/Sub's least retention)."""


class ChangeFeed(Protocol):
    """Tells ``on_change(partition)`` of commits made by any process (at least once each)."""

    def start(self, on_change: OnChange) -> None:
        """Begin delivering on a background thread."""

    def close(self) -> None:
        """Stop delivering (returns once the thread is gone)."""


class _Loop:
    """A daemon thread running ``turn`` until closed."""

    name = "change-feed"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_change: OnChange) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, args=(on_change,), name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, on_change: OnChange) -> None:
        while not self._stop.is_set():
            try:
                self.turn(on_change)
            except Exception:  # the feed outlives one bad turn (a bucket or network hiccup)
                log.exception("%s: a turn failed", self.name)
                self._stop.wait(1.0)

    def turn(self, on_change: OnChange) -> None:
        raise NotImplementedError


def _tell(on_change: OnChange, partition: str) -> None:
    try:
        on_change(partition)
    except Exception:  # one listener's failure must not stop the feed
        log.exception("change feed: the listener failed on %s", partition)


class PollingChangeFeed(_Loop):
    """Every ``interval_s``, the head of each partition in ``partitions()``; reports those that moved.

    Args:
        partitions: the partitions to check this turn (called every turn).
        head_of: a partition's head (its last notification id; 0 when empty).
        interval_s: the pause between two turns.
        report_new: report a partition the first time it is checked (it may have moved between the
            moment it became of interest and this first look; the default).
    """

    name = "change-poll"

    def __init__(
        self,
        partitions: Callable[[], Iterable[str]],
        head_of: HeadOf,
        *,
        interval_s: float = 0.25,
        report_new: bool = True,
    ) -> None:
        super().__init__()
        self.partitions = partitions
        self.head_of = head_of
        self.interval_s = interval_s
        self.report_new = report_new
        self._heads: dict[str, int] = {}

    def turn(self, on_change: OnChange) -> None:
        seen: dict[str, int] = {}
        for partition in sorted(set(self.partitions())):
            try:
                head = self.head_of(partition)
            except Exception:  # a partition that cannot be read now is tried again next turn
                log.exception("change poll: the head of %s", partition)
                continue
            seen[partition] = head
            before = self._heads.get(partition)
            if (before is None and self.report_new) or (before is not None and head != before):
                _tell(on_change, partition)
        self._heads = seen
        self._stop.wait(self.interval_s)


class PubSubChangeFeed(_Loop):
    """Object notifications of a GCS bucket, pulled from the Pub/Sub ``subscription`` of ``project``.

    Args:
        project, subscription: where the bucket's notifications are delivered to this process.
        prefix: the bucket URL's prefix (``gs://bucket/<prefix>``): object names outside it are
            ignored, and it is taken off the others.
        max_messages: messages per pull.
        delete_on_close: delete the subscription when closed (this process's own).
    """

    name = "change-pubsub"

    def __init__(
        self,
        project: str,
        subscription: str,
        *,
        prefix: str = "",
        max_messages: int = 500,
        delete_on_close: bool = False,
    ) -> None:
        super().__init__()
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.SubscriberClient()
        self.subscription_path = self._client.subscription_path(project, subscription)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.max_messages = max_messages
        self.delete_on_close = delete_on_close

    def partition_of(self, attributes: Any) -> str | None:
        """The partition a notification's object belongs to (None: not a commit, or not ours)."""
        if attributes.get("eventType", "OBJECT_FINALIZE") != "OBJECT_FINALIZE":
            return None
        name = attributes.get("objectId", "")
        if not name.startswith(self.prefix):
            return None
        return layout.partition_of_commit(name[len(self.prefix) :])

    def turn(self, on_change: OnChange) -> None:
        from google.api_core import exceptions as gexc

        try:
            reply = self._client.pull(
                request={"subscription": self.subscription_path, "max_messages": self.max_messages},
                timeout=1.0,
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return
        received = list(reply.received_messages)
        if not received:
            return
        partitions = {self.partition_of(m.message.attributes) for m in received} - {None}
        for partition in sorted(p for p in partitions if p is not None):
            _tell(on_change, partition)
        self._client.acknowledge(
            request={"subscription": self.subscription_path, "ack_ids": [m.ack_id for m in received]}
        )

    def close(self) -> None:
        super().close()
        if self.delete_on_close:
            try:
                self._client.delete_subscription(request={"subscription": self.subscription_path}, timeout=10)
            except Exception:  # it expires on its own (OWN_SUBSCRIPTION_TTL_S)
                log.warning("could not delete %s; it expires unused", self.subscription_path, exc_info=True)
        with contextlib.suppress(Exception):  # closing a channel already gone
            self._client.close()


class _Both:
    """Several feeds as one."""

    def __init__(self, feeds: Sequence[ChangeFeed]) -> None:
        self.feeds = list(feeds)

    def start(self, on_change: OnChange) -> None:
        for feed in self.feeds:
            feed.start(on_change)

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()


def both(*feeds: ChangeFeed) -> ChangeFeed:
    """One feed telling what any of ``feeds`` tells (a Pub/Sub feed and its polling backstop)."""
    return _Both(feeds)


def create_topic(project: str, topic: str) -> None:
    """Create ``topic`` if missing (emulator, first start)."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(request={"name": publisher.topic_path(project, topic)})


def create_notification_subscription(project: str, topic: str, subscription: str) -> None:
    """Create ``topic`` and an (unordered) ``subscription`` to it if missing (emulator, first start)."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    try:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(request={"name": topic_path})
        with contextlib.suppress(gexc.AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": subscriber.subscription_path(project, subscription),
                    "topic": topic_path,
                    "ack_deadline_seconds": 30,
                }
            )
    finally:
        subscriber.close()


def own_subscription_name(base: str) -> str:
    """A subscription name no other process uses: ``<base>-<host>-<pid>-<random>`` (Pub/Sub's
    characters only, at most 255)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:60]
    name = f"{base.rstrip('-')}-{host}-{os.getpid()}-{secrets.token_hex(4)}"
    return name if name[0].isalpha() else f"s-{name}"


def create_own_subscription(project: str, topic: str, subscription: str) -> None:
    """Create this process's own (unordered) ``subscription`` of ``topic``: it expires after
    ``OWN_SUBSCRIPTION_TTL_S`` without a pull and keeps messages ``OWN_SUBSCRIPTION_RETENTION_S``."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(project, subscription),
                "topic": subscriber.topic_path(project, topic),
                "ack_deadline_seconds": 10,
                "message_retention_duration": {"seconds": OWN_SUBSCRIPTION_RETENTION_S},
                "expiration_policy": {"ttl": {"seconds": OWN_SUBSCRIPTION_TTL_S}},
                "labels": {"tune-own": "1"},
            },
            timeout=30,
        )
    finally:
        subscriber.close()


def per_process(url: str) -> str:
    """``url`` with a subscription of each process's own: ``pubsub://p/t/s`` -> ``pubsub://p/t/s-*``
    (other feeds, and URLs already ending in ``*``, as they are)."""
    if url.startswith("pubsub://") and not url.endswith("*"):
        return f"{url.rstrip('-')}-*"
    return url


def open_change_feed(
    url: str,
    *,
    partitions: Callable[[], Iterable[str]],
    head_of: HeadOf,
    bucket_prefix: str = "",
    backstop_s: float = 10.0,
    create: bool = False,
) -> ChangeFeed:
    """The feed ``url`` names: ``poll`` / ``poll:<seconds>`` (``PollingChangeFeed`` over ``partitions``),
    or ``pubsub://project/topic/subscription`` (``PubSubChangeFeed``, with a polling backstop every
    ``backstop_s``; ``create`` makes the topic and subscription first). A subscription ending in
    ``*`` is this process's own: made now (the topic must exist), deleted when the feed closes."""
    if url == "poll" or url.startswith("poll:"):
        interval = float(url.partition(":")[2] or 0.25)
        return PollingChangeFeed(partitions, head_of, interval_s=interval)
    if url.startswith("pubsub://"):
        parts = url[len("pubsub://") :].split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a change feed URL is pubsub://project/topic/subscription, not {url!r}")
        project, topic, subscription = parts
        own = subscription.endswith("*")
        if own:
            subscription = own_subscription_name(subscription[:-1] or topic)
            if create:
                create_topic(project, topic)
            create_own_subscription(project, topic, subscription)
            log.info("change feed: this process's own subscription %s", subscription)
        elif create:
            create_notification_subscription(project, topic, subscription)
        return both(
            PubSubChangeFeed(project, subscription, prefix=bucket_prefix, delete_on_close=own),
            PollingChangeFeed(partitions, head_of, interval_s=backstop_s),
        )
    raise ValueError(f"a change feed is poll, poll:<seconds> or pubsub://project/topic/subscription: {url!r}")
