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
