"""LiveJobs (who is beating) and UserSpend (a user's spend per period, by billing.json's fold)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from domain.applications import UserApp
from domain.metering import FixedUsage, LimitOrders, MeteredJob, MeteringResult, UsageRun
from domain.money import cost_usd_micros
from domain.read_models import BudgetView
from projections.billing import BillingState
from runners.ledger import LiveJob, LiveJobs
from runners.ledger.spend import UserSpend
from tests.unit.ledger.builders import A100_PRICE, T0, Platform, stream


def entry(job_id: str, attempt: int = 1, seconds_ago: float = 0, final: bool = False) -> LiveJob:
    return LiveJob(user_id="u1", job_id=job_id, attempt=attempt, interval_ms=10_000,
                   last_seen=T0 - timedelta(seconds=seconds_ago), final=final)  # fmt: skip


def test_a_later_attempt_replaces_an_earlier_one_never_the_reverse() -> None:
    live = LiveJobs()
    live.record(entry("j1", attempt=2))
    live.record(entry("j1", attempt=1))
    assert live.get("u1", "j1").attempt == 2  # type: ignore[union-attr]
    live.forget(entry("j1", attempt=1))  # not the recorded one: kept
    assert len(live) == 1


def test_running_excludes_final_and_quiet_attempts_quiet_lists_them() -> None:
    live = LiveJobs()
    live.record(entry("beating", seconds_ago=5))
    live.record(entry("ended", final=True))
    live.record(entry("silent", seconds_ago=31))
    assert [e.job_id for e in live.running("u1", T0, 3)] == ["beating"]
    assert [e.job_id for e in live.quiet(T0, 3)] == ["silent"]
    assert live.running("u2", T0, 3) == []


def one_running_job() -> tuple[Platform, UserApp, UserSpend]:
    """u1 with job j1 running on 2 GPUs, and a UserSpend that has read u1's log."""
    platform = Platform()
    platform.running_job("u1", "j1", gpu_count=2)
    app = platform.user_app("u1")
    spend = UserSpend()
    spend.refresh(app)
    return platform, app, spend


class _Folding(FixedUsage):
    """Meters j1's heartbeat ``seq`` (10 s on 2 GPUs) and keeps ``spend.after`` of its events."""

    def __init__(self, seq: int, spend: UserSpend) -> None:
        run = UsageRun(job_id="j1", attempt=1, first_seq=seq, last_seq=seq, gpu_type="a100-80gb", gpu_count=2,
                       gpu_ms=10_000, usd_micros_per_hour=A100_PRICE, period="2026-03", last_at=T0,
                       heartbeats=1)  # fmt: skip
        super().__init__([run])
        self.spend, self.after = spend, BillingState()

    def limit_orders(self, jobs: Any, budget: BudgetView | None) -> LimitOrders:
        self.after = self.spend.after([e for job in jobs for e in job.events])
        return super().limit_orders(jobs, budget)


def metered_j1(app: UserApp, seq: int, spend: UserSpend) -> tuple[MeteringResult, BillingState]:
    """j1 with one more heartbeat metered and saved; the spend ``after`` folded before the save."""
    plan = _Folding(seq, spend)
    result = app.meter_usage(["j1"], plan, T0)
    return result, plan.after


def pending_j1(app: UserApp, seq: int, spend: UserSpend) -> BillingState:
    """The spend with one more heartbeat of j1 folded in, saved by no one."""
    seen: list[MeteredJob] = []

    class Peek(_Folding):
        def limit_orders(self, jobs: Any, budget: BudgetView | None) -> LimitOrders:
            seen.extend(jobs)
            raise _Abandon

    with contextlib.suppress(_Abandon):  # the command saves nothing: the plan gave no orders
        app.meter_usage(["j1"], Peek(seq, spend), T0)
    return spend.after([e for job in seen for e in job.events])


class _Abandon(Exception):
    pass


def test_spend_follows_the_log_and_folds_pending_events_without_keeping_them() -> None:
    platform, app, spend = one_running_job()
    assert UserSpend.period_total(spend.state, "2026-03") == 0
    platform.worker().handle(stream("j1", 6, gpu_count=2))
    spend.refresh(app)
    assert UserSpend.period_total(spend.state, "2026-03") == cost_usd_micros(60_000, 2, A100_PRICE)
    assert spend.position == app.recorder.max_notification_id()
    after = pending_j1(app, 7, spend)
    assert UserSpend.period_total(after, "2026-03") == cost_usd_micros(70_000, 2, A100_PRICE)
    assert UserSpend.period_total(spend.state, "2026-03") == cost_usd_micros(60_000, 2, A100_PRICE)


def test_spend_takes_its_own_next_commit_without_reading_it_and_skips_one_that_does_not_follow() -> None:
    platform, app, spend = one_running_job()
    result, after = metered_j1(app, 1, spend)
    assert spend.advance(result.first_position, result.last_position, after)
    assert spend.position == app.recorder.max_notification_id()
    assert UserSpend.period_total(spend.state, "2026-03") == cost_usd_micros(10_000, 2, A100_PRICE)

    platform.worker().handle(stream("j1", 3, gpu_count=2))  # another writer: seqs 1 (a repeat) to 3
    result, after = metered_j1(app, 4, spend)
    assert not spend.advance(result.first_position, result.last_position, after)  # a gap: left to refresh
    assert UserSpend.period_total(spend.state, "2026-03") == cost_usd_micros(10_000, 2, A100_PRICE)
    spend.refresh(app)
    assert UserSpend.period_total(spend.state, "2026-03") == cost_usd_micros(40_000, 2, A100_PRICE)


def test_the_ledgers_running_spend_equals_a_fresh_fold_of_the_log() -> None:
    platform = Platform()
    for job_id in ("j1", "j2"):
        platform.running_job("u1", job_id, gpu_count=2)
    worker = platform.worker()
    for first in range(1, 13, 3):
        worker.handle(stream("j1", 3, gpu_count=2, first=first) + stream("j2", 2, gpu_count=2, first=first))
    fresh = UserSpend()
    fresh.refresh(platform.user_app("u1"))
    kept = worker._spend["u1"]
    assert (kept.position, kept.state) == (fresh.position, fresh.state)
    # j2's seqs 3, 6 and 9 never came: seq 11 carries its total (11 intervals), nothing is lost
    j1, j2 = (cost_usd_micros(n * 10_000, 2, A100_PRICE) for n in (12, 11))
    assert UserSpend.period_total(kept.state, "2026-03") == j1 + j2
