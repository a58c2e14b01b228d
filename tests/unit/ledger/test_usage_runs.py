"""Pure metering: which heartbeats are billed, and how they group into one event per usage group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.cumulative import AttemptMeter
from domain.money import UsageGroupKey
from runners.ledger.usage_runs import Increase, by_user_and_job, fresh_heartbeats, usage_runs
from tests.unit.ledger.builders import A100, T0, beat


def runs_of(priced: list, meters: dict | None = None) -> list:  # type: ignore[type-arg]
    return usage_runs([Increase(h, p, 1000) for h, p in priced], meters or {})


def keys(heartbeats: list) -> list[tuple[int, int]]:
    return [(h.attempt, h.seq) for h in heartbeats]


def test_repeats_and_already_metered_seqs_are_dropped_and_the_rest_sorted() -> None:
    batch = [
        beat("j1", 5),
        beat("j1", 3),
        beat("j1", 4),
        beat("j1", 3),
        beat("j1", 2),
        beat("j1", 1, attempt=2),
    ]
    fresh = fresh_heartbeats(batch, {"1": 2})
    assert keys(fresh.heartbeats) == [(1, 3), (1, 4), (1, 5), (2, 1)]
    assert fresh.dropped == 2  # the repeated 3 and the already metered 2


def test_a_gap_in_seq_is_fine() -> None:
    fresh = fresh_heartbeats([beat("j1", 1), beat("j1", 4)], {})
    assert keys(fresh.heartbeats) == [(1, 1), (1, 4)]
    assert fresh.dropped == 0


def test_one_run_per_group_carrying_the_summed_increases_and_anchor() -> None:
    hbs = [beat("j1", s) for s in (1, 2, 3)]
    increases = [Increase(h, 2_100_000, 1000 + h.seq) for h in hbs]
    meters = {1: AttemptMeter(seq=3, ms=3006, anchor_at=T0, anchor_ms=0)}
    (run,) = usage_runs(increases, meters)
    assert (run.first_seq, run.last_seq, run.gpu_ms, run.heartbeats) == (1, 3, 3006, 3)
    assert run.key == UsageGroupKey("2026-03", "j1", A100, 1, 2_100_000)
    assert run.last_at == hbs[-1].at
    assert (run.archive, run.archive_sha256) == (None, None)  # named by the worker, once all are known
    assert (run.anchor_at, run.anchor_ms) == (T0, 0)


def test_a_price_change_a_month_boundary_and_an_attempt_each_start_a_new_run() -> None:
    end = datetime(2026, 3, 31, 23, 59, 50, tzinfo=UTC)
    priced = [
        (beat("j1", 1, at=end - timedelta(minutes=5)), 1_000_000),
        (beat("j1", 2, at=end - timedelta(minutes=4)), 2_000_000),
        (beat("j1", 3, at=end - timedelta(minutes=3)), 2_000_000),
        (beat("j1", 4, at=end + timedelta(seconds=20)), 2_000_000),
        (beat("j1", 1, attempt=2, at=end + timedelta(seconds=30)), 2_000_000),
    ]
    runs = runs_of(priced)
    assert [(r.attempt, r.first_seq, r.last_seq, r.period, r.usd_micros_per_hour) for r in runs] == [
        (1, 1, 1, "2026-03", 1_000_000),
        (1, 2, 3, "2026-03", 2_000_000),
        (1, 4, 4, "2026-04", 2_000_000),
        (2, 1, 1, "2026-04", 2_000_000),
    ]


def test_runs_stay_consecutive_so_seq_ranges_never_overlap() -> None:
    # the clock went back across a price change: the same price group appears twice, not merged
    priced = [(beat("j1", 1), 1), (beat("j1", 2), 2), (beat("j1", 3), 1)]
    runs = runs_of(priced)
    assert [(r.first_seq, r.last_seq, r.usd_micros_per_hour) for r in runs] == [
        (1, 1, 1),
        (2, 2, 2),
        (3, 3, 1),
    ]


def test_grouping_by_user_and_job_keeps_arrival_order() -> None:
    batch = [beat("j2", 1, user_id="u2"), beat("j1", 1), beat("j2", 2, user_id="u2"), beat("j3", 1)]
    grouped = by_user_and_job(batch)
    assert list(grouped) == ["u2", "u1"]
    assert list(grouped["u1"]) == ["j1", "j3"]
    assert [h.seq for h in grouped["u2"]["j2"]] == [1, 2]
