"""Bounded clocks: a runner's clock cannot move usage into another month, and an attempt is
never billed more GPU time than the wall time the ledger saw it run (times its GPU count)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.money import cost_usd_micros
from runners.ledger.usage_runs import AttemptClock, ClockBounds, bound_clocks
from tests.unit.ledger.builders import A100_PRICE, INTERVAL_S, T0, Platform, beat, metered, stream

MS = INTERVAL_S * 1000


def test_a_normal_stream_is_untouched() -> None:
    beats = [beat("j1", 1, gpu_ms=0), *stream("j1", 5, first=2, gpu_count=2)]
    bounded = bound_clocks(beats, beats[-1].at, 2, {})
    assert bounded.heartbeats == beats
    assert bounded.clock_clamped == bounded.gpu_clamped == 0


def test_a_date_past_the_bound_is_metered_at_the_receive_time() -> None:
    received = T0 + timedelta(seconds=INTERVAL_S)
    future = beat("j1", 1, at=T0 + timedelta(days=31))
    past = beat("j1", 2, at=T0 - timedelta(days=31), gpu_ms=0)
    edge = beat("j1", 3, at=received + timedelta(minutes=5), gpu_ms=0)  # on the bound: kept
    bounded = bound_clocks([future, past, edge], received, 1, {})
    assert [h.at for h in bounded.heartbeats] == [received, received, edge.at]
    assert bounded.clock_clamped == 2
    assert bounded.heartbeats[0].gpu_ms == future.gpu_ms  # first heartbeat seen: the anchor


def test_the_bound_is_configurable() -> None:
    late = beat("j1", 1, at=T0 - timedelta(seconds=61))
    assert bound_clocks([late], T0, 1, {}, ClockBounds(clock_bound=timedelta(minutes=1))).clock_clamped == 1
    assert bound_clocks([late], T0, 1, {}, ClockBounds(clock_bound=timedelta(minutes=2))).clock_clamped == 0


def test_gpu_time_beyond_the_wall_time_since_the_anchor_is_cut() -> None:
    start = beat("j1", 1, gpu_ms=0, at=T0)
    honest = beat("j1", 2, gpu_ms=MS, at=T0 + timedelta(seconds=INTERVAL_S))
    greedy = beat("j1", 3, gpu_ms=100 * MS, at=T0 + timedelta(seconds=2 * INTERVAL_S))
    clocks: dict[int, AttemptClock] = {}
    bounded = bound_clocks(
        [start, honest, greedy], greedy.at, 1, clocks, ClockBounds(gpu_tolerance=timedelta())
    )
    assert [h.gpu_ms for h in bounded.heartbeats] == [0, MS, MS]
    assert bounded.gpu_clamped == 1
    # a later batch: the state carried over; a burst of tiny intervals cannot add tolerance each time
    burst = [beat("j1", s, gpu_ms=5_000, at=greedy.at + timedelta(milliseconds=s - 3)) for s in (4, 5, 6)]
    again = bound_clocks(burst, burst[-1].at, 1, clocks, ClockBounds(gpu_tolerance=timedelta(seconds=2)))
    assert [h.gpu_ms for h in again.heartbeats] == [2_001, 1, 1]
    assert again.gpu_clamped == 3


def test_claimed_gpus_beyond_the_submitted_count_do_not_add_gpu_time() -> None:
    start = beat("j1", 1, gpu_ms=0, at=T0)
    claim = beat("j1", 2, gpu_ms=MS, gpu_count=16, at=T0 + timedelta(seconds=INTERVAL_S))
    bounded = bound_clocks([start, claim], claim.at, 2, {}, ClockBounds(gpu_tolerance=timedelta()))
    assert bounded.heartbeats[1].gpu_ms * 16 <= MS * 2
    assert bounded.gpu_clamped == 1


def test_each_attempt_has_its_own_anchor() -> None:
    first = beat("j1", 1, gpu_ms=0, at=T0)
    retry = beat("j1", 1, attempt=2, gpu_ms=0, at=T0 + timedelta(seconds=1))
    then = beat("j1", 2, attempt=2, gpu_ms=MS, at=T0 + timedelta(seconds=1 + INTERVAL_S))
    bounded = bound_clocks([first, retry, then], then.at, 1, {}, ClockBounds(gpu_tolerance=timedelta()))
    assert [h.gpu_ms for h in bounded.heartbeats] == [0, 0, MS]


@pytest.fixture
def platform() -> Platform:
    return Platform()


def test_a_heartbeat_dated_31_days_ahead_does_not_empty_the_current_month(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 1, gpu_ms=0, at=T0), beat("j1", 2)])
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 3, at=T0 + timedelta(days=31))])

    assert worker.stats.clock_clamped == 1
    assert {e.period for e in metered(platform, "u1")} == {"2026-03"}
    current = platform.billing_json("u1")["current_period"]
    assert current["start_date"] == "2026-03-01"
    assert current["total_cost_usd_micros"] == cost_usd_micros(2 * MS, 1, A100_PRICE)
    assert platform.job("u1", "j1").gpu_ms == 2 * MS


def test_gpu_time_claimed_beyond_the_wall_time_is_cut_across_batches(platform: Platform) -> None:
    platform.running_job("u1", "j1", gpu_count=2)
    worker = platform.worker(gpu_tolerance=timedelta())
    worker.handle([beat("j1", 1, gpu_ms=0, at=T0, gpu_count=2)])
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 2, gpu_count=2), beat("j1", 3, gpu_ms=1000 * MS, gpu_count=2)])
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 4, gpu_count=16, gpu_ms=MS)])  # claims 16 GPUs: rejected, not billed

    assert worker.stats.gpu_clamped == 1 and worker.stats.contradicting == 1
    # wall time seen since the start heartbeat (its at, T0): 4 intervals x 2 GPUs
    assert sum(e.gpu_ms * e.gpu_count for e in metered(platform, "u1")) <= 4 * MS * 2
