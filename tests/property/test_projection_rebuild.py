"""Rebuilding views from position 0 gives the same bytes as keeping them up incrementally.

Random valid histories are made through the real service layer (``UserApp`` /
``PlatformApp`` on POPO); commands the domain refuses are skipped, so every
stored sequence is one the platform could have written. A projector catches up
at random points (and is sometimes restarted); at the end every stored view
must equal, byte for byte, the view rebuilt in memory from position 0, and no
other view may exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.applications import PlatformApp, UserApp
from projections.replay import replay
from storage.layout import PLATFORM
from storage.memory import MemoryBucket
from tests.property.histories import PlatformDriver, UserDriver, platform_command, play, step, user_command


def _stored(bucket: MemoryBucket) -> dict[str, bytes]:
    return {name: bucket.read(name) for name in bucket.list("")}


def _run(partition: str, app: Any, driver: Any, commands: list[tuple[tuple[Any, ...], int]]) -> None:
    bucket = play(partition, app, driver, commands)
    rebuilt = replay(app, partition)
    for name in sorted(
        {
            type(app.mapper.to_domain_event(n)).__qualname__
            for n in app.recorder.select_notifications(1, 10_000)
        }
    ):
        event(name)
    names = rebuilt.views.names() + rebuilt.views.index_names()
    expected = {name: rebuilt.views.render(name) for name in names}
    assert _stored(bucket) == expected


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(user_command, step), min_size=40, max_size=150))
def test_user_views_rebuilt_from_zero_equal_incremental_views(
    commands: list[tuple[tuple[Any, ...], int]],
) -> None:
    app = UserApp("u1")
    driver = UserDriver(app)
    for setup in (("dataset", "d0", 0), ("dataset", "d0", 0)):  # d0 uploaded, then validated
        driver(setup, datetime(2024, 1, 30, tzinfo=UTC))
    _run("users/u1", app, driver, commands)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(platform_command, step), min_size=10, max_size=60))
def test_platform_views_rebuilt_from_zero_equal_incremental_views(
    commands: list[tuple[tuple[Any, ...], int]],
) -> None:
    app = PlatformApp()
    _run(PLATFORM, app, PlatformDriver(app), commands)
