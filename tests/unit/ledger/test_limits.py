"""Pure limit decisions: alerts once per threshold, stops when the next interval would pass a limit."""

from __future__ import annotations

from domain.metering import BudgetAlert, JobAlert
from runners.ledger.limits import BudgetOutlook, JobOutlook, plan_limits

NO_BUDGET = BudgetOutlook(
    monthly_limit_usd_micros=None, period="2026-03", spent_by_period={}, next_usd_micros=0
)
THRESHOLDS = [50, 80, 100]


def job(spent: int, next_cost: int = 10, limit: int | None = 1000, **kw: object) -> JobOutlook:
    return JobOutlook(
        job_id="j1", spent_usd_micros=spent, next_usd_micros=next_cost, max_cost_usd_micros=limit, **kw
    )


def test_job_alerts_fire_for_every_threshold_reached_and_not_alerted_yet() -> None:
    actions = plan_limits([job(850, alerted_pct=frozenset({50}))], NO_BUDGET, THRESHOLDS)
    assert actions.job_alerts == [JobAlert("j1", 80, 850, 1000)]
    assert plan_limits([job(499)], NO_BUDGET, THRESHOLDS).job_alerts == []
    assert [a.threshold_pct for a in plan_limits([job(1000)], NO_BUDGET, THRESHOLDS).job_alerts] == [
        50,
        80,
        100,
    ]


def test_a_job_without_max_cost_never_alerts_or_stops() -> None:
    actions = plan_limits([job(10**12, next_cost=10**9, limit=None)], NO_BUDGET, THRESHOLDS)
    assert actions.job_alerts == [] and actions.stop_jobs == []


def test_a_job_stops_when_its_next_interval_would_pass_max_cost() -> None:
    assert plan_limits([job(990, next_cost=10)], NO_BUDGET, THRESHOLDS).stop_jobs == []  # lands exactly on it
    assert plan_limits([job(991, next_cost=10)], NO_BUDGET, THRESHOLDS).stop_jobs == ["j1"]
    assert plan_limits([job(991, next_cost=10, stoppable=False)], NO_BUDGET, THRESHOLDS).stop_jobs == []


def test_budget_alerts_per_period_and_a_stop_of_every_live_job() -> None:
    budget = BudgetOutlook(
        monthly_limit_usd_micros=1000,
        period="2026-04",
        spent_by_period={"2026-03": 1000, "2026-04": 600},
        next_usd_micros=450,  # every live job's next interval together
        alerted={"2026-03": frozenset({50, 80})},
    )
    actions = plan_limits([job(5, limit=None)], budget, THRESHOLDS)
    assert actions.budget_alerts == [BudgetAlert("2026-03", 100, 1000), BudgetAlert("2026-04", 50, 600)]
    assert actions.stop_all_live
    calm = BudgetOutlook(
        monthly_limit_usd_micros=1000, period="2026-04", spent_by_period={"2026-04": 600}, next_usd_micros=400
    )
    assert not plan_limits([job(5, limit=None)], calm, THRESHOLDS).stop_all_live
