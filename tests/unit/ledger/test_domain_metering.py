"""domain.metering: the price schedule agrees with PriceList.price_at; marginal costs are exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.applications import PlatformApp
from domain.errors import NotFound
from domain.metering import PriceSchedule, job_policy, marginal_cost_usd_micros, may_retry
from domain.money import UsageGroupKey, cost_usd_micros

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@given(
    changes=st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 9_000_000)), min_size=1, max_size=6),
    start_min=st.integers(0, 60_000),
    probes=st.lists(st.integers(0, 80_000), min_size=1, max_size=20),
)
def test_the_schedule_prices_every_time_as_the_price_list_does(
    changes: list[tuple[int, int]], start_min: int, probes: list[int]
) -> None:
    platform = PlatformApp()
    effective = T0
    for gap, price in changes:
        effective += timedelta(minutes=gap)
        platform.set_price("h100-80gb", price, effective, T0)
    start = T0 + timedelta(minutes=start_min)
    schedule = PriceSchedule(platform.price_list(start))
    for probe in probes:
        t = start + timedelta(minutes=probe)
        try:
            expected: int | None = platform.price_at("h100-80gb", t)
        except NotFound:
            expected = None
        if expected is None:
            with pytest.raises(NotFound):
                schedule.price_at("h100-80gb", t)
        else:
            assert schedule.price_at("h100-80gb", t) == expected
    with pytest.raises(ValueError, match="before"):
        schedule.price_at("h100-80gb", start - timedelta(seconds=1))


@given(
    ms=st.integers(0, 10**9),
    extra=st.integers(0, 10**8),
    count=st.integers(1, 16),
    price=st.integers(0, 10**8),
)
def test_the_marginal_cost_is_the_difference_of_two_group_costs(
    ms: int, extra: int, count: int, price: int
) -> None:
    key = UsageGroupKey("2026-03", "j1", "h100-80gb", count, price)
    usage = {key.encode(): ms, "2026-02|j1|h100-80gb|1|5": 123}
    marginal = marginal_cost_usd_micros(usage, key, extra)
    assert marginal == cost_usd_micros(ms + extra, count, price) - cost_usd_micros(ms, count, price)
    assert marginal >= 0


def test_job_policy_and_retries() -> None:
    assert job_policy({"heartbeat_interval_seconds": 2.5, "max_retries": 1}) == (2500, 1)
    assert job_policy({"no such key": 1}) == (10_000, 2)  # unreadable: the defaults
    assert [may_retry(a, 2) for a in (1, 2, 3)] == [True, True, False]
