"""``PubSubChangeFeed`` against Google's Pub/Sub emulator: GCS object notifications, as the bucket
publishes them (attributes ``objectId``, ``eventType``), published here by the test."""

from __future__ import annotations

import threading

import pytest

from storage.changes import PubSubChangeFeed, create_notification_subscription

pytestmark = pytest.mark.pubsub


def test_commit_notifications_reach_the_feed_as_partitions(pubsub_emulator: str) -> None:
    from google.cloud import pubsub_v1

    create_notification_subscription("proj", "bucket-changes", "api-1")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path("proj", "bucket-changes")
    told: list[str] = []
    got = threading.Event()
    feed = PubSubChangeFeed("proj", "api-1", prefix="tenant")

    def on_change(partition: str) -> None:
        told.append(partition)
        if "users/usr_b" in told:
            got.set()

    feed.start(on_change)
    try:
        for name, event in [
            ("tenant/platform/events/000000000003.json", "OBJECT_FINALIZE"),
            ("tenant/users/usr_a/metadata/jobs.json", "OBJECT_FINALIZE"),  # a view, not a commit
            ("other/users/usr_c/events/000000000001.json", "OBJECT_FINALIZE"),  # outside the prefix
            ("tenant/users/usr_a/events/000000000002.json", "OBJECT_DELETE"),
            ("tenant/users/usr_b/events/000000000007.json", "OBJECT_FINALIZE"),
        ]:
            publisher.publish(topic, b"{}", objectId=name, eventType=event, bucketId="b").result(timeout=10)
        assert got.wait(20)
    finally:
        feed.close()
    assert told == ["platform", "users/usr_b"]


def test_each_process_on_a_star_subscription_gets_every_notification_and_deletes_its_own_on_close(
    pubsub_emulator: str,
) -> None:
    """Two API workers on ``pubsub://proj/<topic>/api-*``: each has a subscription of its own, so a
    notification reaches both (one shared subscription hands it to one of them only); a clean
    close deletes the worker's subscription."""
    import uuid

    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    from storage.changes import open_change_feed, per_process

    topic_name = f"changes-{uuid.uuid4().hex[:10]}"
    url = per_process(f"pubsub://proj/{topic_name}/api")
    assert url == f"pubsub://proj/{topic_name}/api-*"
    feeds = [
        open_change_feed(url, partitions=list, head_of=lambda p: 0, create=True, backstop_s=60)
        for _ in range(2)
    ]
    subscriptions = [feed.feeds[0].subscription_path for feed in feeds]  # type: ignore[attr-defined]
    assert len(set(subscriptions)) == 2
    assert all("/subscriptions/api-" in path for path in subscriptions)
    subscriber = pubsub_v1.SubscriberClient()
    for path in subscriptions:
        got = subscriber.get_subscription(request={"subscription": path})
        assert got.expiration_policy.ttl.total_seconds() == 24 * 3600
    told: list[list[str]] = [[], []]
    heard = [threading.Event(), threading.Event()]

    def listener(i: int):  # type: ignore[no-untyped-def]
        def on_change(partition: str) -> None:
            told[i].append(partition)
            heard[i].set()

        return on_change

    for i, feed in enumerate(feeds):
        feed.start(listener(i))
    publisher = pubsub_v1.PublisherClient()
    try:
        publisher.publish(
            publisher.topic_path("proj", topic_name),
            b"{}",
            objectId="platform/events/000000000009.json",
            eventType="OBJECT_FINALIZE",
        ).result(timeout=10)
        assert heard[0].wait(20) and heard[1].wait(20), told
    finally:
        for feed in feeds:
            feed.close()
    assert told == [["platform"], ["platform"]]
    for path in subscriptions:
        with pytest.raises(gexc.NotFound):
            subscriber.get_subscription(request={"subscription": path})
    subscriber.close()
