"""Commits by another process reach this one: the change feed and the views it drops.

Two ``Runtime``s on one local folder bucket, each on its own bucket object (so its own partition
logs, as two processes have): what one commits, the other's views show within 2 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.context import Runtime
from storage import layout
from storage.changes import PollingChangeFeed, open_change_feed
from tests.api.conftest import make_settings


def _within(seconds: float, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds; fails after ``seconds``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    server = Runtime(make_settings(tmp_path))
    other = Runtime(make_settings(tmp_path, change_feed="off"))
    server.start()
    try:
        yield server, other
    finally:
        server.stop()


def _register(rt: Runtime, email: str) -> str:
    user_id = rt.platform.register_user(email, "x", "user", rt.clock())
    rt.committed(layout.PLATFORM)
    return user_id


def test_a_suspension_by_another_process_shows_here_within_2_s(two: tuple[Runtime, Runtime]) -> None:
    server, other = two
    user_id = _register(server, "ann@example.com")
    assert server.accepts_token(user_id, 0)  # the server's projector fed its view cache
    other.platform.suspend_user(user_id, "abuse", other.clock())
    other.committed(layout.PLATFORM)  # like ``tune admin``: it writes the views itself
    _within(2.0, lambda: not server.accepts_token(user_id, 0))


def test_a_quota_set_by_another_process_shows_here_within_2_s(two: tuple[Runtime, Runtime]) -> None:
    server, other = two
    user_id = _register(server, "bob@example.com")
    server.quota(user_id)
    other.platform.set_quota(user_id, 3, 1000, other.clock())
    other.committed(layout.PLATFORM)
    _within(2.0, lambda: server.quota(user_id).max_dataset_bytes == 1000)


def test_a_commit_nobody_projected_is_projected_by_the_process_holding_its_views(
    two: tuple[Runtime, Runtime],
) -> None:
    server, other = two
    user_id = _register(server, "cy@example.com")
    other.platform.suspend_user(user_id, "abuse", other.clock())  # committed, views not written
    _within(2.0, lambda: not server.accepts_token(user_id, 0))


def test_an_api_worker_leaves_other_processes_commits_to_the_projector_role_and_shows_its_views(
    tmp_path: Path,
) -> None:
    """``tune run api`` (``fold_others=False``): a commit another process made is not folded here
    (each worker refolding every commit was most of the view lag ``bench/bench_topology.py``
    measured); the views the projector role writes of it show within 2 s, over the ones this
    process fed itself."""
    api = Runtime(make_settings(tmp_path), fold_others=False)
    projector = Runtime(make_settings(tmp_path, change_feed="off"))
    api.start()
    try:
        user_id = _register(api, "dee@example.com")
        assert api.accepts_token(user_id, 0)  # its own fold fed the view
        assert api.projector.wait_idle()  # the notification of its start may still be pending
        folded = api.projector.position(layout.PLATFORM)
        projector.platform.suspend_user(user_id, "abuse", projector.clock())  # views not written yet
        time.sleep(1.0)  # the feed (every 0.25 s) has told of it
        assert api.projector.position(layout.PLATFORM) == folded and api.accepts_token(user_id, 0)
        projector.committed(layout.PLATFORM)  # the projector role writes the views
        _within(2.0, lambda: not api.accepts_token(user_id, 0))
        assert api.projector.position(layout.PLATFORM) == folded
    finally:
        api.stop()


def test_the_polling_feed_reports_each_partition_that_moved(tmp_path: Path) -> None:
    heads = {"platform": 1, "users/usr_a": 4}
    told: list[str] = []
    seen = threading.Event()
    feed = PollingChangeFeed(lambda: list(heads), heads.__getitem__, interval_s=0.01)
    feed.start(lambda p: (told.append(p), seen.set()))
    try:
        time.sleep(0.05)
        assert sorted(told) == ["platform", "users/usr_a"]  # on first sight: they may have moved unseen
        told.clear()
        seen.clear()
        heads["users/usr_a"] = 5
        assert seen.wait(2.0)
    finally:
        feed.close()
    assert told == ["users/usr_a"]


def test_open_change_feed_names() -> None:
    feed = open_change_feed("poll:0.5", partitions=list, head_of=lambda p: 0)
    assert isinstance(feed, PollingChangeFeed) and feed.interval_s == 0.5
    with pytest.raises(ValueError, match="pubsub://project/topic/subscription"):
        open_change_feed("pubsub://only-project", partitions=list, head_of=lambda p: 0)


@pytest.mark.parametrize(
    ("name", "partition"),
    [
        ("platform/events/000000000001.json", "platform"),
        ("users/usr_a/events/000000000002.json", "users/usr_a"),
        ("users/usr_a/events/segments/000000000100.json", "users/usr_a"),
        ("users/usr_a/metadata/jobs.json", None),
        ("platform/metadata/users.json", None),
        ("users/../events/x", None),
    ],
)
def test_partition_of_commit(name: str, partition: str | None) -> None:
    assert layout.partition_of_commit(name) == partition


def test_per_process_gives_each_process_its_own_pubsub_subscription() -> None:
    from storage.changes import own_subscription_name, per_process

    assert per_process("pubsub://p/t/api") == "pubsub://p/t/api-*"
    assert per_process("pubsub://p/t/api-*") == "pubsub://p/t/api-*"
    assert per_process("poll:0.25") == "poll:0.25"
    first, second = own_subscription_name("api-"), own_subscription_name("api-")
    assert first != second and first.startswith("api-") and second.startswith("api-")
    assert own_subscription_name("9x")[0].isalpha()
