"""Routing events to projections and recording, per view, the position of its last change."""

from __future__ import annotations

import pytest

from domain.applications import PlatformApp
from projections.partition import PlatformPartition, UserPartition, open_partition
from projections.render import decode
from projections.replay import read_events, replay
from storage.layout import PLATFORM, user_partition
from tests.unit.projections.builders import T0, Apps, PlatformLog, UserLog

U1 = "users/u1"


def test_a_views_position_is_the_last_event_that_changed_it() -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    log.submit("j1")  # 1
    log.submit("j2")  # 2
    log.do("j1", "queue")  # 3
    log.do("j1", "start", 1)  # 4
    last = log.do("j1", "report_progress", 1, 1, 10, None, 1.0, 5)  # 5: j1's status only
    part = replay(apps(U1), U1)
    views = part.views
    assert views.position_of("users/u1/jobs/j2/status.json") == 2
    assert views.position_of("users/u1/jobs/j1/status.json") == last == 5
    assert views.position_of("users/u1/metadata/jobs.json") == 4  # progress does not touch the listing
    assert decode(views.render("users/u1/metadata/position.json")) == {"position": 5, "partition": U1}


def test_events_no_view_shows_still_advance_the_partition() -> None:
    app = PlatformApp()
    app.register_user("u1@example.com", "$argon2$h", "user", T0, user_id="u1")  # User + UserEmail.Claimed
    part = replay(app, PLATFORM)
    assert part.position == 2
    assert part.views.position_of("users/u1/metadata/user_info.json") == 1
    assert part.views.position_of("platform/metadata/position.json") == 2


def test_a_price_change_touches_every_users_copy_and_a_registration_only_the_new_one() -> None:
    apps = Apps()
    platform = PlatformLog(apps(PLATFORM))
    platform.register("u1")
    platform.set_price("t4", 350_000)
    platform.register("u2")
    part = replay(apps(PLATFORM), PLATFORM)
    assert isinstance(part, PlatformPartition)
    at_u1 = part.views.position_of("users/u1/metadata/gpu_pricing.json")
    at_u2 = part.views.position_of("users/u2/metadata/gpu_pricing.json")
    assert at_u1 < at_u2
    assert (
        part.views.render("users/u1/metadata/gpu_pricing.json").split(b",", 1)[1]
        == (part.views.render("users/u2/metadata/gpu_pricing.json").split(b",", 1)[1])
    )  # the same prices, each at its own position


def test_take_dirty_returns_what_changed_since_the_last_flush() -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    log.submit("j1")
    part = open_partition(U1)
    events = list(read_events(apps(U1)))
    for position, event in events:
        part.apply(position, event)
    assert part.views.take_dirty() == {
        "users/u1/jobs/j1/status.json",
        "users/u1/metadata/jobs.json",
        "users/u1/metadata/index/jobs/000000.json",
        "users/u1/metadata/index/jobs/head.json",
        "users/u1/metadata/position.json",
    }
    assert part.views.take_dirty() == set()
    with pytest.raises(ValueError, match="not after"):
        part.apply(events[-1][0], events[-1][1])


def test_partition_names() -> None:
    assert isinstance(open_partition(PLATFORM), PlatformPartition)
    assert isinstance(open_partition("users/abc_1"), UserPartition)
    assert user_partition("abc_1") == "users/abc_1"
    for bad in ("users/", "users/../x", "users/a/b", "other/u1", "platform/"):
        with pytest.raises(Exception):  # noqa: B017  (ValueError or ValidationFailed)
            open_partition(bad)


def test_owned_view_names() -> None:
    user, platform = open_partition(U1), open_partition(PLATFORM)
    assert user.owns("users/u1/jobs/j1/status.json") and user.owns("users/u1/metadata/billing_history.json")
    assert not user.owns("users/u1/jobs/j1/config.yml") and not user.owns("users/u1/metadata/user_info.json")
    assert not user.owns("users/u2/metadata/jobs.json")
    assert platform.owns("users/u2/metadata/user_info.json") and platform.owns("platform/metadata/users.json")
    assert not platform.owns("users/u2/metadata/jobs.json")
