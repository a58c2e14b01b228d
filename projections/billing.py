"""Billing: ``metadata/billing.json`` (current period, budget, alerts) and ``metadata/billing_history.json``.

The current period is the latest period any usage or budget alert names. The
fold has no clock, so a stored current period may be a month that is over:
``as_of(billing, history, period)`` is the rule a reader applies, giving what
the views will say once the new month has an event (that month closed, at the
head of the history with its alerts; an empty current month with the whole
budget remaining). Every other period is closed and lives, newest first, in
billing_history.json, so the current view stays small.

Money: each usage group is priced once from its summed milliseconds
(``projections.usage``); a job's cost in a period is the sum of its groups, a
period's total the sum of its jobs. Credits (``Job.UsageCredited``) are folded per
group: every ``cost``/``total_cost`` is net (what the user pays, and what the budget
counts), ``gpu_ms``/``seconds`` are what was metered; a period or job row with credits
also shows ``charged``, ``credited`` and ``credited_gpu_ms`` (written only then, so the
views of histories without credits are unchanged).

Serving (``ServingUsage.Metered``: chat completions, batched) is folded per period into serving groups
(``projections.usage.ServingGroup``), each priced once from its summed tokens; their cost is part of
the period's total (what the budget counts). A period with serving shows ``serving`` (a row per model
and price) and ``serving_cost``; both are written only then, so the views of histories without
serving are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from msgspec.structs import replace

from domain.budget import Budget
from domain.job import Job
from domain.money import dollars, dollars_or_none
from domain.serving import ServingUsage
from projections import usage
from projections.render import event_name, event_names, iso, month_start, seconds
from views.rows import BudgetView, GpuUsage, Rate, ServedModel

__all__ = [
    "BILLING",
    "EVENTS",
    "HISTORY",
    "BillingState",
    "BillingView",
    "HistoryView",
    "billing_view",
    "fold",
    "history_view",
    "touched",
]

EVENTS = event_names(
    Job.Submitted,
    Job.UsageMetered,
    Job.UsageCredited,
    Budget.BudgetSet,
    Budget.AlertRaised,
    ServingUsage.Metered,
)
_SERVED = "ServingUsage.Metered"
BILLING = "billing"
HISTORY = "billing_history"


class BudgetLimit(msgspec.Struct, frozen=True):
    monthly_limit_usd_micros: int | None
    thresholds_pct: tuple[int, ...]
    set_at: datetime


class BudgetAlert(msgspec.Struct, frozen=True):
    period: str
    threshold_pct: int
    spent_usd_micros: int
    limit_usd_micros: int
    at: datetime


class PeriodState(msgspec.Struct, frozen=True):
    """One month: usage groups per job, the latest price seen per GPU type, budget alerts, and the
    total: the sum of the jobs' costs, kept as each job's cost changes (the ledger reads it every
    commit; summing every job of the month each time grew with the month)."""

    period: str
    jobs: dict[str, tuple[usage.Group, ...]] = msgspec.field(default_factory=dict)
    latest_rate: dict[str, int] = msgspec.field(default_factory=dict)
    alerts: tuple[BudgetAlert, ...] = ()
    total_usd_micros: int = 0
    serving: tuple[usage.ServingGroup, ...] = ()


class BillingState(msgspec.Struct, frozen=True):
    job_ids: dict[UUID, str] = msgspec.field(default_factory=dict)
    periods: dict[str, PeriodState] = msgspec.field(default_factory=dict)
    budget: BudgetLimit | None = None
    current: str | None = None


def _with_period(state: BillingState, period: PeriodState) -> BillingState:
    current = max(state.current or period.period, period.period)
    return replace(state, periods={**state.periods, period.period: period}, current=current)


def fold(state: BillingState, event: Any) -> BillingState:
    """The user's billing after one event (pure)."""
    name = event_name(event)
    if name == "Job.Submitted":
        return replace(state, job_ids={**state.job_ids, event.originator_id: event.job_id})
    if name in ("Job.UsageMetered", "Job.UsageCredited"):
        job_id = state.job_ids[event.originator_id]
        period = state.periods.get(event.period) or PeriodState(event.period)
        before = period.jobs.get(job_id, ())
        metered = name == "Job.UsageMetered"
        groups = usage.add(before, event) if metered else usage.credit(before, event)
        rates = {**period.latest_rate, event.gpu_type: event.usd_micros_per_hour} if metered else None
        period = replace(
            period,
            jobs={**period.jobs, job_id: groups},
            latest_rate=period.latest_rate if rates is None else rates,
            total_usd_micros=period.total_usd_micros
            + usage.cost_usd_micros(groups)
            - usage.cost_usd_micros(before),
        )
        return _with_period(state, period)
    if name == _SERVED:
        period = state.periods.get(event.period) or PeriodState(event.period)
        served = usage.add_served(period.serving, event)
        added = usage.served_cost_usd_micros(served) - usage.served_cost_usd_micros(period.serving)
        period = replace(period, serving=served, total_usd_micros=period.total_usd_micros + added)
        return _with_period(state, period)
    if name == "Budget.BudgetSet":
        budget = BudgetLimit(event.monthly_limit_usd_micros, tuple(event.thresholds_pct), event.at)
        return replace(state, budget=budget)
    if name == "Budget.AlertRaised":
        alert = BudgetAlert(
            event.period, event.threshold_pct, event.spent_usd_micros, event.limit_usd_micros, event.at
        )
        period = state.periods.get(event.period) or PeriodState(event.period)
        return _with_period(state, replace(period, alerts=(*period.alerts, alert)))
    return state


def touched(old: BillingState, new: BillingState, event: Any) -> set[str]:
    """Which of BILLING / HISTORY an event changed."""
    name = event_name(event)
    if name == "Budget.BudgetSet":
        return {BILLING}
    if name not in ("Job.UsageMetered", "Job.UsageCredited", "Budget.AlertRaised", _SERVED):
        return set()
    if event.period != new.current:
        return {HISTORY}
    if old.current is not None and old.current != new.current:
        return {BILLING, HISTORY}
    return {BILLING}


# -- views ---------------------------------------------------------------


class JobCost(msgspec.Struct, omit_defaults=True):
    """One job on one GPU type in a period; ``duration_seconds`` is wall time on its GPUs (metered),
    ``cost`` the net; with credits, what was ``charged`` and ``credited`` too."""

    job_id: str
    gpu_type: str
    duration_seconds: Decimal
    cost: Decimal
    gpu_seconds: Decimal
    cost_usd_micros: int
    charged: Decimal | None = None
    charged_usd_micros: int | None = None
    credited: Decimal | None = None
    credited_usd_micros: int | None = None
    credited_gpu_ms: int | None = None


class Period(msgspec.Struct, omit_defaults=True):
    """A month; ``total_cost`` is net (what is paid); with credits, ``charged`` and ``credited`` too."""

    start_date: str
    total_cost: Decimal
    usage_breakdown: dict[str, GpuUsage]
    jobs: list[JobCost]
    period: str
    total_cost_usd_micros: int
    charged: Decimal | None = None
    charged_usd_micros: int | None = None
    credited: Decimal | None = None
    credited_usd_micros: int | None = None
    credited_gpu_ms: int | None = None
    serving: list[ServedModel] | None = None
    serving_cost: Decimal | None = None
    serving_cost_usd_micros: int | None = None


class AlertView(msgspec.Struct):
    period: str
    threshold_pct: int
    spent: Decimal
    spent_usd_micros: int
    limit: Decimal
    limit_usd_micros: int
    at: str | None


class ClosedPeriod(Period, kw_only=True):
    alerts: list[AlertView]


class BillingView(msgspec.Struct):
    """``metadata/billing.json``."""

    position: int
    current_period: Period | None
    budget: BudgetView | None
    alerts: list[AlertView]
    remaining: Decimal | None
    remaining_usd_micros: int | None


class HistoryView(msgspec.Struct):
    """``metadata/billing_history.json``: closed periods, newest first."""

    position: int
    periods: list[ClosedPeriod]


def _breakdown(period: PeriodState) -> dict[str, GpuUsage]:
    by_type: dict[str, dict[int, list[usage.Group]]] = {}
    for groups in period.jobs.values():
        for group in groups:
            by_type.setdefault(group.gpu_type, {}).setdefault(group.usd_micros_per_hour, []).append(group)
    breakdown = {}
    for gpu_type, by_rate in by_type.items():
        rates = []
        for rate, groups in sorted(by_rate.items()):
            gpu_ms = sum(g.gpu_ms * g.gpu_count for g in groups)
            cost = sum(g.cost_usd_micros for g in groups)
            rates.append(
                Rate(
                    cost_per_hour=dollars(rate),
                    usd_micros_per_hour=rate,
                    seconds=seconds(gpu_ms),
                    gpu_ms=gpu_ms,
                    total_cost=dollars(cost),
                    total_cost_usd_micros=cost,
                )
            )
        latest = period.latest_rate[gpu_type]
        gpu_ms = sum(r.gpu_ms for r in rates)
        cost = sum(r.total_cost_usd_micros for r in rates)
        breakdown[gpu_type] = GpuUsage(
            seconds=seconds(gpu_ms),
            cost_per_hour=dollars(latest),
            total_cost=dollars(cost),
            gpu_ms=gpu_ms,
            cost_per_hour_usd_micros=latest,
            total_cost_usd_micros=cost,
            rates=rates,
        )
    return breakdown


def _job_costs(period: PeriodState) -> list[JobCost]:
    rows = []
    for job_id, groups in sorted(period.jobs.items()):
        for gpu_type in sorted({g.gpu_type for g in groups}):
            mine = tuple(g for g in groups if g.gpu_type == gpu_type)
            cost = usage.cost_usd_micros(mine)
            gpu_seconds = seconds(sum(g.gpu_ms * g.gpu_count for g in mine))
            rows.append(
                JobCost(
                    job_id,
                    gpu_type,
                    seconds(usage.gpu_ms(mine)),
                    dollars(cost),
                    gpu_seconds,
                    cost,
                    **usage.credit_fields(mine),
                )
            )
    return rows


def served_models(groups: tuple[usage.ServingGroup, ...]) -> list[ServedModel]:
    """The rows of serving groups, by model then base model and prices."""
    return [
        ServedModel(
            model=g.model,
            base_model=g.base_model,
            requests=g.requests,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            engine_ms=g.engine_ms,
            prompt_usd_micros_per_mtok=g.prompt_usd_micros_per_mtok,
            completion_usd_micros_per_mtok=g.completion_usd_micros_per_mtok,
            cost=dollars(g.cost_usd_micros),
            cost_usd_micros=g.cost_usd_micros,
        )
        for g in groups
    ]


def _serving_fields(period: PeriodState) -> dict[str, Any]:
    if not period.serving:
        return {}
    cost = usage.served_cost_usd_micros(period.serving)
    return {
        "serving": served_models(period.serving),
        "serving_cost": dollars(cost),
        "serving_cost_usd_micros": cost,
    }


def _period(period: PeriodState, cls: type[Period] = Period, **extra: Any) -> Any:
    total = period.total_usd_micros
    return cls(
        start_date=month_start(period.period),
        total_cost=dollars(total),
        usage_breakdown=_breakdown(period),
        jobs=_job_costs(period),
        period=period.period,
        total_cost_usd_micros=total,
        **usage.credit_fields(tuple(g for groups in period.jobs.values() for g in groups)),
        **_serving_fields(period),
        **extra,
    )


def _alert(alert: BudgetAlert) -> AlertView:
    return AlertView(
        alert.period,
        alert.threshold_pct,
        dollars(alert.spent_usd_micros),
        alert.spent_usd_micros,
        dollars(alert.limit_usd_micros),
        alert.limit_usd_micros,
        iso(alert.at),
    )


def billing_view(state: BillingState, position: int) -> BillingView:
    current = state.periods.get(state.current) if state.current else None
    budget = remaining = None
    if state.budget is not None:
        limit = state.budget.monthly_limit_usd_micros
        shown = dollars_or_none(limit)
        budget = BudgetView(
            monthly_limit=shown,
            monthly_limit_usd_micros=limit,
            thresholds_pct=list(state.budget.thresholds_pct),
            set_at=iso(state.budget.set_at),
        )
        if limit is not None:
            remaining = max(0, limit - (current.total_usd_micros if current else 0))
    return BillingView(
        position=position,
        current_period=_period(current) if current else None,
        budget=budget,
        alerts=[_alert(a) for a in current.alerts] if current else [],
        remaining=dollars_or_none(remaining),
        remaining_usd_micros=remaining,
    )


def history_view(state: BillingState, position: int) -> HistoryView:
    closed = sorted((p for name, p in state.periods.items() if name != state.current), key=lambda p: p.period)
    periods = [_period(p, ClosedPeriod, alerts=[_alert(a) for a in p.alerts]) for p in reversed(closed)]
    return HistoryView(position, periods)


def as_of(billing: Any, history: Any, period: str, *, empty_period: Callable[[str], Any]) -> tuple[Any, Any]:
    """``billing.json`` and ``billing_history.json`` (decoded, any Structs of their shapes) as of ``period``.

    A stored current period older than ``period`` is closed: it leads the history, carrying the
    month's alerts, and the current month is ``empty_period(period)`` with no alerts and the whole
    budget remaining. Views whose current period is ``period`` are returned as they are.
    """
    current = billing.current_period
    if current is not None and current.period == period:
        return billing, history
    if current is not None:
        closed = replace(current, alerts=list(billing.alerts))
        history = replace(
            history,
            periods=[closed, *(p for p in history.periods if p.period != current.period)],
            position=max(history.position, billing.position),
        )
    budget = billing.budget
    billing = replace(
        billing,
        current_period=empty_period(period),
        alerts=[],
        remaining=budget.monthly_limit if budget else None,
        remaining_usd_micros=budget.monthly_limit_usd_micros if budget else None,
    )
    return billing, history
