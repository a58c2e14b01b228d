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
    "as_of",
    "billing_view",
    "current_as_of",
    "fold",
    "history_as_of",
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


class PeriodState:
    """One month: usage groups per job, the latest price seen per GPU type, budget alerts, and the
    total: the sum of the jobs' costs, kept as each job's cost changes (the ledger reads it every
    commit; summing every job of the month each time grew with the month). Changed in place by
    ``fold`` (a job's groups are replaced, never changed: a copy of ``jobs`` shares them)."""

    __slots__ = ("alerts", "jobs", "latest_rate", "period", "serving", "total_usd_micros")

    def __init__(
        self,
        period: str,
        jobs: dict[str, tuple[usage.Group, ...]] | None = None,
        latest_rate: dict[str, int] | None = None,
        alerts: tuple[BudgetAlert, ...] = (),
        total_usd_micros: int = 0,
        serving: tuple[usage.ServingGroup, ...] = (),
    ) -> None:
        self.period = period
        self.jobs = {} if jobs is None else jobs
        self.latest_rate = {} if latest_rate is None else latest_rate
        self.alerts = alerts
        self.total_usd_micros = total_usd_micros
        self.serving = serving

    def _content(self) -> tuple[Any, ...]:
        return (self.period, self.jobs, self.latest_rate, self.alerts, self.total_usd_micros, self.serving)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeriodState) and self._content() == other._content()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PeriodState({self.period!r}, {len(self.jobs)} jobs, total {self.total_usd_micros})"

    def copy(self) -> PeriodState:
        return PeriodState(
            self.period,
            dict(self.jobs),
            dict(self.latest_rate),
            self.alerts,
            self.total_usd_micros,
            self.serving,
        )


class BillingState:
    """A user's billing as far as some event: the job ids by aggregate id, the months, the budget.

    ``fold`` changes it in place, each event at a cost independent of the history (no map is copied
    per event: folding a partition is linear in its events). ``fork()`` gives a state to fold
    further without changing this one (the ledger's pending batch): the two share the job-id map
    and the months, and each copies the map or a month the first time it changes it (copy on
    write: one copy of a touched month per fork, not one per event).
    """

    __slots__ = ("_own_job_ids", "_own_periods", "budget", "current", "job_ids", "periods")

    def __init__(self) -> None:
        self.job_ids: dict[UUID, str] = {}
        self.periods: dict[str, PeriodState] = {}
        self.budget: BudgetLimit | None = None
        self.current: str | None = None
        self._own_job_ids = True
        self._own_periods: set[str] = set()
        """The months this state may change in place (not shared with a fork)."""

    def __eq__(self, other: object) -> bool:
        """Equal content (what each owns aside)."""
        if not isinstance(other, BillingState):
            return False
        mine = (self.job_ids, self.periods, self.budget, self.current)
        return mine == (other.job_ids, other.periods, other.budget, other.current)

    __hash__ = None  # type: ignore[assignment]

    def fork(self) -> BillingState:
        """A state equal to this one, folded on independently of it (see the class docstring)."""
        other = BillingState()
        other.job_ids, other.periods = self.job_ids, dict(self.periods)
        other.budget, other.current = self.budget, self.current
        other._own_job_ids = self._own_job_ids = False
        self._own_periods = set()
        return other

    def add_job(self, originator_id: UUID, job_id: str) -> None:
        if not self._own_job_ids:
            self.job_ids, self._own_job_ids = dict(self.job_ids), True
        self.job_ids[originator_id] = job_id

    def period_to_change(self, name: str) -> PeriodState:
        """The month ``name`` (new if it has no event yet), this state's own to change; it becomes the
        current month if it is the latest."""
        period = self.periods.get(name)
        if period is None or name not in self._own_periods:
            period = self.periods[name] = PeriodState(name) if period is None else period.copy()
            self._own_periods.add(name)
        if self.current is None or name > self.current:
            self.current = name
        return period


def fold(state: BillingState, event: Any) -> BillingState:
    """Fold one event into ``state`` (changed in place, and returned: ``state.fork()`` first to keep it)."""
    name = event_name(event)
    if name == "Job.Submitted":
        state.add_job(event.originator_id, event.job_id)
    elif name in ("Job.UsageMetered", "Job.UsageCredited"):
        job_id = state.job_ids[event.originator_id]
        period = state.period_to_change(event.period)
        before = period.jobs.get(job_id, ())
        if name == "Job.UsageMetered":
            groups = usage.add(before, event)
            period.latest_rate[event.gpu_type] = event.usd_micros_per_hour
        else:
            groups = usage.credit(before, event)
        period.jobs[job_id] = groups
        period.total_usd_micros += usage.cost_usd_micros(groups) - usage.cost_usd_micros(before)
    elif name == _SERVED:
        period = state.period_to_change(event.period)
        served = usage.add_served(period.serving, event)
        added = usage.served_cost_usd_micros(served) - usage.served_cost_usd_micros(period.serving)
        period.serving, period.total_usd_micros = served, period.total_usd_micros + added
    elif name == "Budget.BudgetSet":
        state.budget = BudgetLimit(event.monthly_limit_usd_micros, tuple(event.thresholds_pct), event.at)
    elif name == "Budget.AlertRaised":
        alert = BudgetAlert(
            event.period, event.threshold_pct, event.spent_usd_micros, event.limit_usd_micros, event.at
        )
        period = state.period_to_change(event.period)
        period.alerts = (*period.alerts, alert)
    return state


def touched(current_before: str | None, new: BillingState, event: Any) -> set[str]:
    """Which of BILLING / HISTORY an event changed (``current_before``: the current month before it)."""
    name = event_name(event)
    if name == "Budget.BudgetSet":
        return {BILLING}
    if name not in ("Job.UsageMetered", "Job.UsageCredited", "Budget.AlertRaised", _SERVED):
        return set()
    if event.period != new.current:
        return {HISTORY}
    if current_before is not None and current_before != new.current:
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
    return current_as_of(billing, period, empty_period=empty_period), history_as_of(billing, history, period)


def current_as_of(billing: Any, period: str, *, empty_period: Callable[[str], Any]) -> Any:
    """``billing.json`` as of ``period`` (``as_of``): what ``/billing/usage`` needs, without the history."""
    current = billing.current_period
    if current is not None and current.period == period:
        return billing
    budget = billing.budget
    return replace(
        billing,
        current_period=empty_period(period),
        alerts=[],
        remaining=budget.monthly_limit if budget else None,
        remaining_usd_micros=budget.monthly_limit_usd_micros if budget else None,
    )


def history_as_of(billing: Any, history: Any, period: str) -> Any:
    """``billing_history.json`` as of ``period`` (``as_of``): led by the stored month if it is over."""
    current = billing.current_period
    if current is None or current.period == period:
        return history
    closed = replace(current, alerts=list(billing.alerts))
    return replace(
        history,
        periods=[closed, *(p for p in history.periods if p.period != current.period)],
        position=max(history.position, billing.position),
    )
