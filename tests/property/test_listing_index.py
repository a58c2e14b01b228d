"""The paged index kept per changed item, and coalesced complete listings, equal a rebuild from 0.

Random valid histories of a dozen jobs (small pages, so entities spread over several) are played
through ``UserApp``; a projector that coalesces the complete listings (``coalesce_s`` of an hour:
after the first write each is deferred) catches up at random points, is sometimes restarted
(forgetting what it deferred) and sometimes writes what it deferred. After every catch-up the
stored index (head and pages) equals the index replayed from position 0 at that point, and every
stored complete listing equals a replay at its own position or is that of an earlier position; at
the end, once the deferred listings are written, every stored object equals the rebuild.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import projections.index
from domain.applications import UserApp
from domain.errors import PlatformError
from projections.partition import LISTING
from projections.projector import Projector
from projections.replay import replay
from projections.store import stored_position
from storage.memory import MemoryBucket
from tests.property.histories import UserDriver, step

U1 = "users/u1"
JOBS = [f"j{i}" for i in range(12)]

command = st.one_of(
    *[st.tuples(st.just("job"), st.sampled_from(JOBS), st.integers(0, 20), st.integers(0, 10**9))] * 8,
    st.tuples(st.just("dataset"), st.just("d1"), st.integers(0, 3)),
    st.tuples(st.sampled_from(["catch_up", "catch_up", "restart", "flush"])),
)


@contextlib.contextmanager
def page_rows(rows: int) -> Iterator[None]:
    before, projections.index.PAGE_ROWS = projections.index.PAGE_ROWS, rows
    try:
        yield
    finally:
        projections.index.PAGE_ROWS = before


def _check_caught_up(bucket: MemoryBucket, app: UserApp) -> None:
    part = replay(app, U1)
    for name in part.views.index_names():
        assert bucket.read(name) == part.views.render(name), name
    for name in part.views.names():
        if part.views.kind_of(name) == LISTING and bucket.exists(name):
            assert stored_position(bucket.read(name)) <= part.views.position_of(name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(command, step), min_size=30, max_size=160))
def test_incremental_index_and_coalesced_listings_equal_a_rebuild(
    commands: list[tuple[tuple[Any, ...], int]],
) -> None:
    with page_rows(3):
        app = UserApp("u1")
        driver = UserDriver(app)
        at = datetime(2024, 1, 30, tzinfo=UTC)
        for setup in (("dataset", "d0", 0), ("dataset", "d0", 0)):
            driver(setup, at)
        bucket = MemoryBucket()

        def projector_() -> Projector:
            return Projector(bucket, lambda _: app, coalesce_s=3600.0)

        projector = projector_()
        for cmd, seconds in commands:
            at += timedelta(seconds=seconds)
            if cmd == ("catch_up",):
                projector.catch_up(U1)
                _check_caught_up(bucket, app)
            elif cmd == ("restart",):
                projector = projector_()
            elif cmd == ("flush",):
                projector.flush_deferred(force=True)
            else:
                with contextlib.suppress(PlatformError):
                    driver(cmd, at)
        projector.catch_up(U1)
        _check_caught_up(bucket, app)
        projector.flush_deferred(force=True)
        rebuilt = replay(app, U1)
        names = rebuilt.views.names() + rebuilt.views.index_names()
        stored = {name: bucket.read(name) for name in bucket.list("")}
        assert stored == {name: rebuilt.views.render(name) for name in names}
        event(f"job pages: {sum('/index/jobs/0' in name for name in names)}")
