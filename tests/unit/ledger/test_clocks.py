"""Bounded clocks: a runner's clock cannot move usage into another month, and an attempt is
never billed more GPU time than the wall time the ledger saw it run (times its GPU count)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.cumulative import AttemptMeter
from domain.money import cost_usd_micros
from runners.ledger.usage_runs import ClockBounds, bound_clocks, clamp_times
from tests.unit.ledger.builders import A100_PRICE, INTERVAL_S, T0, Platform, beat, metered, stream

MS = INTERVAL_S * 1000
PRICE = 1


def priced(*heartbeats):  # type: ignore[no-untyped-def]
    return [(h, PRICE) for h in heartbeats]


def added(bounded) -> list[int]:  # type: ignore[no-untyped-def]
    return [i.gpu_ms for i in bounded.increases]


def test_a_normal_stream_is_untouched() -> None:
    beats = stream("j1", 6, gpu_count=2)
    clamped, count = clamp_times(beats, beats[-1].at, timedelta(minutes=5))
    assert clamped == beats and count == 0
    bounded = bound_clocks(priced(*beats), 2, {})
    assert added(bounded) == [MS, MS, MS, MS, MS, MS]  # the increases of the cumulative totals
    assert bounded.gpu_clamped == 0


def test_a_date_past_the_bound_is_metered_at_the_receive_time() -> None:
    received = T0 + timedelta(seconds=INTERVAL_S)
    future = beat("j1", 1, at=T0 + timedelta(days=31))
    past = beat("j1", 2, at=T0 - timedelta(days=31))
    edge = beat("j1", 3, at=received + timedelta(minutes=5))  # on the bound: kept
    clamped, count = clamp_times([future, past, edge], received, timedelta(minutes=5))
    assert [h.at for h in clamped] == [received, received, edge.at]
    assert count == 2


def test_the_bound_is_configurable() -> None:
    late = beat("j1", 1, at=T0 - timedelta(seconds=61))
    assert clamp_times([late], T0, timedelta(minutes=1))[1] == 1
    assert clamp_times([late], T0, timedelta(minutes=2))[1] == 0


def test_gpu_time_beyond_the_wall_time_since_the_anchor_is_cut_and_metered_when_wall_time_catches_up() -> (
    None
):
    start = beat("j1", 1, gpu_ms_total=0, at=T0)
    honest = beat("j1", 2, gpu_ms_total=MS, at=T0 + timedelta(seconds=INTERVAL_S))
    greedy = beat("j1", 3, gpu_ms_total=100 * MS, at=T0 + timedelta(seconds=2 * INTERVAL_S))
    meters: dict[int, AttemptMeter] = {}
    bounded = bound_clocks(priced(start, honest, greedy), 1, meters, ClockBounds(gpu_tolerance=timedelta()))
    assert added(bounded) == [0, MS, MS]
    assert bounded.gpu_clamped == 1
    assert (meters[1].ms, meters[1].seq, meters[1].anchor_at, meters[1].anchor_ms) == (2 * MS, 3, T0, 0)
    # a later batch: the state carried over; a burst of tiny intervals cannot add tolerance each time
    burst = [
        beat("j1", s, gpu_ms_total=100 * MS, at=greedy.at + timedelta(milliseconds=s - 3)) for s in (4, 5, 6)
    ]
    again = bound_clocks(priced(*burst), 1, meters, ClockBounds(gpu_tolerance=timedelta(seconds=2)))
    assert added(again) == [2_001, 1, 1]
    assert again.gpu_clamped == 3
    # wall time catches up: what was cut is metered, never more than the runner's total
    later = beat("j1", 7, gpu_ms_total=100 * MS, at=T0 + timedelta(hours=1))
    before = meters[1].ms
    assert added(bound_clocks(priced(later), 1, meters)) == [100 * MS - before]
    assert meters[1].ms == 100 * MS


def test_claimed_gpus_beyond_the_submitted_count_do_not_add_gpu_time() -> None:
    start = beat("j1", 1, gpu_ms_total=0, at=T0)
    claim = beat("j1", 2, gpu_ms_total=MS, gpu_count=16, at=T0 + timedelta(seconds=INTERVAL_S))
    bounded = bound_clocks(priced(start, claim), 2, {}, ClockBounds(gpu_tolerance=timedelta()))
    assert bounded.increases[1].gpu_ms * 16 <= MS * 2
    assert bounded.gpu_clamped == 1


def test_each_attempt_has_its_own_anchor_and_total() -> None:
    first = beat("j1", 1, gpu_ms_total=0, at=T0)
    retry = beat("j1", 1, attempt=2, gpu_ms_total=0, at=T0 + timedelta(seconds=1))
    then = beat("j1", 2, attempt=2, gpu_ms_total=MS, at=T0 + timedelta(seconds=1 + INTERVAL_S))
    meters: dict[int, AttemptMeter] = {}
    bounded = bound_clocks(priced(first, retry, then), 1, meters, ClockBounds(gpu_tolerance=timedelta()))
    assert added(bounded) == [0, 0, MS]
    assert (meters[1].anchor_at, meters[2].anchor_at, meters[1].ms, meters[2].ms) == (T0, retry.at, 0, MS)


@pytest.fixture
def platform() -> Platform:
    return Platform()


def test_a_heartbeat_dated_31_days_ahead_does_not_empty_the_current_month(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 1, gpu_ms_total=0, at=T0), beat("j1", 2, gpu_ms_total=MS)])
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 3, gpu_ms_total=2 * MS, at=T0 + timedelta(days=31))])

    assert worker.stats.clock_clamped == 1
    assert {e.period for e in metered(platform, "u1")} == {"2026-03"}
    current = platform.billing_json("u1")["current_period"]
    assert current["start_date"] == "2026-03-01"
    assert current["total_cost_usd_micros"] == cost_usd_micros(2 * MS, 1, A100_PRICE)
    assert platform.job("u1", "j1").gpu_ms == 2 * MS


def test_gpu_time_claimed_beyond_the_wall_time_is_cut_across_batches(platform: Platform) -> None:
    platform.running_job("u1", "j1", gpu_count=2)
    worker = platform.worker(gpu_tolerance=timedelta())
    worker.handle([beat("j1", 1, gpu_ms_total=0, at=T0, gpu_count=2)])
    platform.clock.advance(INTERVAL_S)
    worker.handle(
        [beat("j1", 2, gpu_count=2, gpu_ms_total=MS), beat("j1", 3, gpu_ms_total=1000 * MS, gpu_count=2)]
    )
    platform.clock.advance(INTERVAL_S)
    worker.handle(
        [
            beat("j1", 4, gpu_count=2, gpu_ms_total=1000 * MS),
            beat("j1", 5, gpu_count=16, gpu_ms_total=1000 * MS),  # claims 16 GPUs: rejected, not billed
        ]
    )

    assert worker.stats.gpu_clamped == 2 and worker.stats.contradicting == 1
    # wall time seen since the start heartbeat (its at, T0): 4 intervals x 2 GPUs
    assert sum(e.gpu_ms * e.gpu_count for e in metered(platform, "u1")) == 4 * MS * 2


def test_the_anchor_survives_a_ledger_restart(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    bounds = {"gpu_tolerance": timedelta()}
    platform.worker(**bounds).handle([beat("j1", 1, gpu_ms_total=0, at=T0)])
    platform.clock.advance(INTERVAL_S)
    restarted = platform.worker(**bounds)  # a new process: it knows the anchor from the events only
    restarted.handle([beat("j1", 2, gpu_ms_total=1000 * MS)])
    assert restarted.stats.gpu_clamped == 1
    assert platform.job("u1", "j1").gpu_ms == 2 * MS  # T0 .. T0 + 2 intervals, not the claim
