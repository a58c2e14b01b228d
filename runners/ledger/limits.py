"""Pure limit decisions after a batch is metered: which alerts to raise, which jobs to stop.

The rules are ``domain.budget``'s (``crossed_thresholds``, ``would_exceed``); this module
only says what they are applied to.

- Alerts: every threshold (the user's ``thresholds_pct``, default 50/80/100) that spending
  has reached and that was not alerted yet: per job against its ``max_cost``
  (``Job.AlertRaised``, scope ``job``), per period against the monthly budget
  (``Budget.AlertRaised``). Each fires once.
- Stops: a job whose cost plus its next interval would pass its ``max_cost``; and, when the
  user's spend in the period plus the next interval of every live job of the user would
  pass the monthly budget, every live job of the user. A stop request reaches the runner at
  its next heartbeat, so a limit is passed by at most one heartbeat interval of cost
  (plus the few seconds the trainer takes to checkpoint), provided the ledger meters each
  heartbeat before the runner sends the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from domain.budget import crossed_thresholds, would_exceed
from domain.metering import BudgetAlert, JobAlert

__all__ = [
    "STOP_REASON",
    "BudgetOutlook",
    "JobOutlook",
    "LimitActions",
    "plan_limits",
]

STOP_REASON = "budget_exceeded"
"""The stop reason the ledger records (the job ends ``stopped`` with it)."""


class JobOutlook(msgspec.Struct, frozen=True, kw_only=True):
    """One job right after its heartbeats were metered."""

    job_id: str
    spent_usd_micros: int
    """The job's whole cost so far (every period, every attempt)."""
    next_usd_micros: int
    """What its next heartbeat interval adds (0 if nothing of it will run any more)."""
    max_cost_usd_micros: int | None
    alerted_pct: frozenset[int] = frozenset()
    """Job-scope thresholds already alerted."""
    stoppable: bool = True
    """Whether a stop request would be new (it is running, retrying or lost, not stopping)."""


class BudgetOutlook(msgspec.Struct, frozen=True, kw_only=True):
    """The user's monthly budget right after the batch."""

    monthly_limit_usd_micros: int | None
    period: str
    """The period the next interval falls in."""
    spent_by_period: Mapping[str, int]
    """The user's spend in each period this batch touched, and in ``period``."""
    next_usd_micros: int
    """The next interval of every live job of the user, together."""
    alerted: Mapping[str, frozenset[int]] = msgspec.field(default_factory=dict)


class LimitActions(msgspec.Struct, frozen=True):
    job_alerts: list[JobAlert]
    budget_alerts: list[BudgetAlert]
    stop_jobs: list[str]
    """Jobs to stop for their own ``max_cost``."""
    stop_all_live: bool
    """The monthly budget would be passed: stop every live job of the user."""


def plan_limits(
    jobs: Sequence[JobOutlook], budget: BudgetOutlook, thresholds_pct: Sequence[int]
) -> LimitActions:
    """The alerts and stops due after a batch (see the module docstring)."""
    job_alerts = [
        JobAlert(job.job_id, t, job.spent_usd_micros, job.max_cost_usd_micros)  # type: ignore[arg-type]
        for job in jobs
        for t in crossed_thresholds(job.spent_usd_micros, job.max_cost_usd_micros, thresholds_pct)
        if t not in job.alerted_pct
    ]
    limit = budget.monthly_limit_usd_micros
    budget_alerts = [
        BudgetAlert(period, t, spent)
        for period, spent in sorted(budget.spent_by_period.items())
        for t in crossed_thresholds(spent, limit, thresholds_pct)
        if t not in budget.alerted.get(period, frozenset())
    ]
    stop_jobs = [
        job.job_id
        for job in jobs
        if job.stoppable and would_exceed(job.spent_usd_micros, job.next_usd_micros, job.max_cost_usd_micros)
    ]
    spent_now = budget.spent_by_period.get(budget.period, 0)
    stop_all = would_exceed(spent_now, budget.next_usd_micros, limit)
    return LimitActions(job_alerts, budget_alerts, stop_jobs, stop_all)
