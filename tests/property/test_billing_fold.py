"""The linear billing fold equals the fold it replaced (kept here as the oracle) over random event
streams with credits, budgets and alerts, months out of order; a fork folds on without changing
the state it came from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from projections import billing, usage
from projections.billing import BudgetAlert, BudgetLimit
from projections.render import encode, event_name

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2024, 3, 1, tzinfo=UTC)
MONTHS = ("2024-01", "2024-02", "2024-03", "2024-04")


class Job:
    """Stands in for ``domain.job.Job``'s events: the fold chooses by the event class's qualified
    name and reads only these fields."""

    class Submitted(msgspec.Struct):
        originator_id: UUID
        job_id: str

    class UsageMetered(msgspec.Struct):
        originator_id: UUID
        period: str
        gpu_type: str
        gpu_count: int
        usd_micros_per_hour: int
        gpu_ms: int

    class UsageCredited(UsageMetered):
        pass


class Budget:
    class BudgetSet(msgspec.Struct):
        monthly_limit_usd_micros: int | None
        thresholds_pct: list[int]
        at: datetime

    class AlertRaised(msgspec.Struct):
        period: str
        threshold_pct: int
        spent_usd_micros: int
        limit_usd_micros: int
        at: datetime


# -- the oracle: the fold as it was (a copy of the job-id map per submission, of the month's
# jobs per usage event) -----------------------------------------------------------------------


class OldPeriod(msgspec.Struct, frozen=True):
    period: str
    jobs: dict[str, tuple[usage.Group, ...]] = msgspec.field(default_factory=dict)
    latest_rate: dict[str, int] = msgspec.field(default_factory=dict)
    alerts: tuple[BudgetAlert, ...] = ()
    total_usd_micros: int = 0
    serving: tuple[usage.ServingGroup, ...] = ()  # none in these streams (serving: test_serving_metering)


class OldState(msgspec.Struct, frozen=True):
    job_ids: dict[UUID, str] = msgspec.field(default_factory=dict)
    periods: dict[str, OldPeriod] = msgspec.field(default_factory=dict)
    budget: BudgetLimit | None = None
    current: str | None = None


def _with_period(state: OldState, period: OldPeriod) -> OldState:
    current = max(state.current or period.period, period.period)
    return replace(state, periods={**state.periods, period.period: period}, current=current)


def old_fold(state: OldState, event: Any) -> OldState:
    name = event_name(event)
    if name == "Job.Submitted":
        return replace(state, job_ids={**state.job_ids, event.originator_id: event.job_id})
    if name in ("Job.UsageMetered", "Job.UsageCredited"):
        job_id = state.job_ids[event.originator_id]
        period = state.periods.get(event.period) or OldPeriod(event.period)
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
    if name == "Budget.BudgetSet":
        budget = BudgetLimit(event.monthly_limit_usd_micros, tuple(event.thresholds_pct), event.at)
        return replace(state, budget=budget)
    if name == "Budget.AlertRaised":
        alert = BudgetAlert(
            event.period, event.threshold_pct, event.spent_usd_micros, event.limit_usd_micros, event.at
        )
        period = state.periods.get(event.period) or OldPeriod(event.period)
        return _with_period(state, replace(period, alerts=(*period.alerts, alert)))
    return state


def old_touched(old: OldState, new: OldState, event: Any) -> set[str]:
    name = event_name(event)
    if name == "Budget.BudgetSet":
        return {billing.BILLING}
    if name not in ("Job.UsageMetered", "Job.UsageCredited", "Budget.AlertRaised"):
        return set()
    if event.period != new.current:
        return {billing.HISTORY}
    if old.current is not None and old.current != new.current:
        return {billing.BILLING, billing.HISTORY}
    return {billing.BILLING}


# -- random streams ------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[Any]:
    """Submissions, usage at a few prices in a few months (out of order), credits within what each
    group was charged, budgets and alerts."""
    jobs: list[tuple[UUID, str]] = []
    charged: dict[tuple[UUID, tuple[Any, ...]], list[int]] = {}  # group -> [charged, credited] ms
    events: list[Any] = []
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(("submit", "meter", "meter", "meter", "credit", "budget", "alert")))
        if kind == "submit" or (kind in ("meter", "credit") and not jobs):
            jobs.append((UUID(int=len(jobs) + 1), f"j{len(jobs)}"))
            events.append(Job.Submitted(*jobs[-1]))
        elif kind == "meter":
            origin = draw(st.sampled_from(jobs))[0]
            key = (
                draw(st.sampled_from(MONTHS)),
                draw(st.sampled_from(("a100-80gb", "h100-80gb"))),
                draw(st.integers(1, 2)),
                draw(st.sampled_from((0, 2_900_000, 10_000_000))),
            )
            ms = draw(st.integers(0, 7_200_000))
            charged.setdefault((origin, key), [0, 0])[0] += ms
            events.append(Job.UsageMetered(origin, *key, ms))
        elif kind == "credit" and charged:
            (origin, key), (ms, credited) = draw(st.sampled_from(list(charged.items())))
            give = draw(st.integers(0, ms - credited))
            charged[(origin, key)][1] += give
            events.append(Job.UsageCredited(origin, *key, give))
        elif kind == "budget":
            limit = draw(st.none() | st.integers(0, 50_000_000))
            events.append(Budget.BudgetSet(limit, draw(st.lists(st.integers(1, 100), max_size=3)), AT))
        elif kind == "alert":
            month, pct = draw(st.sampled_from(MONTHS)), draw(st.integers(1, 100))
            events.append(Budget.AlertRaised(month, pct, draw(st.integers(0, 10**8)), 10**7, AT))
    return events


def _views(state: Any) -> tuple[bytes, bytes, dict[str, int]]:
    """What the projector writes of a state (either fold's) and what the ledger reads of it."""
    totals = {name: period.total_usd_micros for name, period in state.periods.items()}
    return encode(billing.billing_view(state, 7)), encode(billing.history_view(state, 7)), totals


@SETTINGS
@given(streams())
def test_the_linear_fold_equals_the_old_fold_event_by_event(events: list[Any]) -> None:
    old, new = OldState(), billing.BillingState()
    for event in events:
        before = new.current
        old_next = old_fold(old, event)
        assert billing.fold(new, event) is new
        assert billing.touched(before, new, event) == old_touched(old, old_next, event)
        old = old_next
        assert _views(new) == _views(old)


@SETTINGS
@given(streams(), st.data())
def test_a_fork_leaves_its_parent_as_it_was(events: list[Any], data: st.DataObject) -> None:
    """The ledger folds a pending batch on a fork; the state it read stays what the log says."""
    split = data.draw(st.integers(0, len(events)), label="split")
    parent = billing.BillingState()
    for event in events[:split]:
        billing.fold(parent, event)
    oracle = OldState()
    for event in events[:split]:
        oracle = old_fold(oracle, event)
    fork = parent.fork()
    for event in events[split:]:
        billing.fold(fork, event)
    assert _views(parent) == _views(oracle)
    for event in events[split:]:  # and the parent folds on alone, sharing nothing it changes
        billing.fold(parent, event)
        oracle = old_fold(oracle, event)
    assert _views(parent) == _views(oracle) == _views(fork)
    assert parent == fork


def test_the_fold_copies_no_map_per_event() -> None:
    """Each submission adds to the same job-id map and each usage event changes its month in place
    (the old fold copied the map per submission and the month's jobs per usage event)."""
    state = billing.BillingState()
    origins = [uuid4() for _ in range(3)]
    billing.fold(state, Job.Submitted(origins[0], "j0"))
    job_ids = state.job_ids
    billing.fold(state, Job.UsageMetered(origins[0], "2024-03", "a100-80gb", 1, 1_000_000, 60_000))
    month = state.periods["2024-03"]
    jobs = month.jobs
    for n, origin in enumerate(origins[1:], 1):
        billing.fold(state, Job.Submitted(origin, f"j{n}"))
        billing.fold(state, Job.UsageMetered(origin, "2024-03", "a100-80gb", 1, 1_000_000, 60_000))
        billing.fold(state, Job.UsageCredited(origin, "2024-03", "a100-80gb", 1, 1_000_000, 1_000))
    assert state.job_ids is job_ids and len(job_ids) == 3
    assert state.periods["2024-03"] is month and month.jobs is jobs and len(jobs) == 3
