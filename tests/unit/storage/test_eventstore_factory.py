"""Building Applications on a bucket: by env (PERSISTENCE_MODULE) or on a bucket object."""

from __future__ import annotations

import threading
from functools import singledispatchmethod
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import InfrastructureFactoryError, IntegrityError, Tracking
from eventsourcing.projection import Projection, ProjectionRunner

from domain.errors import ValidationFailed
from storage import Bucket, LocalBucket
from storage.eventstore import (
    BucketApplicationRecorder,
    BucketTrackingRecorder,
    Factory,
    application_env,
    open_application,
    verify_chain,
)
from storage.eventstore.commits import commit_name
from storage.layout import PLATFORM_EVENTS, user_events
from storage.memory import MemoryBucket
from tests.accounts import Account, Accounts


def test_the_library_builds_the_factory_from_env(tmp_path: Path) -> None:
    env = {
        "PERSISTENCE_MODULE": "storage.eventstore",
        "TUNE_BUCKET": (tmp_path / "bucket").as_uri(),
        "TUNE_PARTITION": "users/u1/events/",
    }
    app = Accounts(env=env)
    account_id = app.open_account("alice")
    app.credit(account_id, 5)

    assert isinstance(app.factory, Factory)
    assert isinstance(app.recorder, BucketApplicationRecorder)
    assert Accounts(env=env).balance(account_id) == 5
    bucket = LocalBucket(tmp_path / "bucket")
    assert list(bucket.list("users/u1/events/")) == [
        commit_name("users/u1/events/", 1),
        commit_name("users/u1/events/", 2),
    ]
    assert verify_chain(bucket, "users/u1/events/").ok


def test_the_bucket_defaults_to_tune_home(tmp_path: Path) -> None:
    app = Accounts(
        env={
            "PERSISTENCE_MODULE": "storage.eventstore",
            "TUNE_HOME": str(tmp_path),
            "TUNE_BUCKET": "",
            "TUNE_PARTITION": PLATFORM_EVENTS,
        }
    )
    app.open_account("bob")

    assert (tmp_path / "bucket" / "platform" / "events" / "000000000001.json").is_file()


@pytest.mark.parametrize("partition", [None, "platform/events", "/abs/", "a/../b/"])
def test_a_missing_or_bad_partition_is_refused(tmp_path: Path, partition: str | None) -> None:
    env = {"PERSISTENCE_MODULE": "storage.eventstore", "TUNE_BUCKET": tmp_path.as_uri()}
    if partition is not None:
        env["TUNE_PARTITION"] = partition
    with pytest.raises(InfrastructureFactoryError, match=r"partition|segment"):
        Accounts(env=env)


def test_apps_on_one_bucket_object_share_its_partitions_and_only_those() -> None:
    bucket = MemoryBucket()
    first = open_application(Accounts, bucket, user_events("u1"))
    account_id = first.open_account("carol")

    assert open_application(Accounts, bucket, user_events("u1")).balance(account_id) == 0
    assert account_id not in open_application(Accounts, bucket, user_events("u2")).repository
    assert account_id not in open_application(Accounts, MemoryBucket(), user_events("u1")).repository


def test_partitions_are_named_from_checked_ids() -> None:
    assert user_events("u_1-x") == "users/u_1-x/events/"
    assert PLATFORM_EVENTS == "platform/events/"
    for bad in ("", "../etc", "a/b", "x" * 65):
        with pytest.raises(ValidationFailed):
            user_events(bad)


def test_concurrent_changes_to_one_aggregate_from_two_processes_conflict(tmp_path: Path) -> None:
    """Two bucket objects on one folder stand for two processes (no shared cache)."""
    here = open_application(Accounts, LocalBucket(tmp_path), PLATFORM_EVENTS)
    there = open_application(Accounts, LocalBucket(tmp_path), PLATFORM_EVENTS)
    account_id = here.open_account("dave")
    mine: Account = here.repository.get(account_id)
    theirs: Account = there.repository.get(account_id)

    theirs.credit(7)
    there.save(theirs)
    mine.credit(1)
    with pytest.raises(IntegrityError):
        here.save(mine)

    assert here.balance(account_id) == 7


def test_a_subscription_sees_another_process_commits(tmp_path: Path) -> None:
    reader = open_application(Accounts, LocalBucket(tmp_path), PLATFORM_EVENTS)
    writer = open_application(Accounts, LocalBucket(tmp_path), PLATFORM_EVENTS)
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        with reader.recorder.subscribe(gt=None) as subscription:
            for notification in subscription:
                seen.append(notification.id)
                if len(seen) == 3:
                    done.set()
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    account_id = writer.open_account("erin")
    writer.credit(account_id, 1)
    writer.credit(account_id, 2)

    assert done.wait(timeout=10), seen
    assert seen == [1, 2, 3]


def test_snapshots_and_tracking_have_their_own_prefixes() -> None:
    bucket = MemoryBucket()
    app = open_application(Accounts, bucket, "users/u1/events/", IS_SNAPSHOTTING_ENABLED="y")
    account_id = app.open_account("frank")
    app.take_snapshot(account_id)
    tracking = app.factory.tracking_recorder()

    assert [n.rsplit("/", 1)[0] for n in bucket.list("users/u1/")] == [
        "users/u1/events",
        "users/u1/events/snapshots",
    ]
    assert tracking.prefix == "users/u1/events/tracking/Accounts/"


class Counted(BucketTrackingRecorder):
    """A projection's view: counts accounts opened, tracked in the bucket like any view."""

    def __init__(self, bucket: Bucket, prefix: str) -> None:
        super().__init__(bucket, prefix)
        self.opened = 0

    def count_opened(self, tracking: Tracking) -> None:
        self.opened += 1
        self.insert_tracking(tracking)


class CountOpened(Projection[Counted]):
    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: Account.Opened, tracking: Tracking) -> None:
        self.view.count_opened(tracking)


def test_the_library_projection_runner_follows_a_partition() -> None:
    bucket = MemoryBucket()
    env = application_env(bucket, PLATFORM_EVENTS)
    app = Accounts(env=env)
    first = app.open_account("gina")
    with ProjectionRunner(
        application_class=Accounts, projection_class=CountOpened, view_class=Counted, env=env
    ) as runner:
        app.credit(first, 3)
        app.open_account("hal")
        runner.wait(app.recorder.max_notification_id(), timeout=10)

        assert runner.view.opened == 2
        assert runner.view.max_tracking_id("Accounts") == 3
    assert list(bucket.list(f"{PLATFORM_EVENTS}tracking/CountOpened/"))  # the view's position is kept
