"""Pure rules the ledger needs that no aggregate holds: prices over a window, the next interval, retries.

- ``PriceSchedule``: the price in force at any time from a ``PriceListView`` (the prices in
  force at ``view.at`` plus every change scheduled after it), by the same rule as
  ``PriceList.price_at``: the latest entry whose ``effective_at <= t``. One view answers a
  whole batch of heartbeats without loading the price list once per heartbeat.
- ``marginal_cost_usd_micros``: what ``extra_ms`` more in one usage group adds to a job's
  cost, exactly (the money rule prices the group's summed milliseconds, so this is the
  difference of two group costs, never a per-interval rounding).
- ``job_policy``: a job's heartbeat interval and retry budget, from its training config.
- ``may_retry``: attempts run while ``attempt <= max_retries`` (so ``1 + max_retries`` in all).

And what ``UserApp.meter_usage`` (the ledger's one commit per user per batch) takes and
gives: the ``UsagePlan`` it asks what to record (``UsageRun`` per job and the
``RejectedHeartbeats`` it refused to bill, then ``LimitOrders`` after seeing each
``MeteredJob``), and the ``MeteringResult`` it returns.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import msgspec

from domain.base import check_utc
from domain.cumulative import AttemptMeter
from domain.errors import NotFound, ValidationFailed
from domain.job import JobState
from domain.money import UsageGroupKey, cost_usd_micros
from domain.read_models import BudgetView, PriceListView
from domain.training_config import TrainingConfig, parse_training_config

__all__ = [
    "JOB_SCOPE",
    "BudgetAlert",
    "FixedUsage",
    "JobAlert",
    "JobPolicy",
    "LimitOrders",
    "MeteredJob",
    "MeteringResult",
    "PriceSchedule",
    "RefusedRun",
    "RejectedHeartbeats",
    "UsagePlan",
    "UsageRun",
    "job_policy",
    "marginal_cost_usd_micros",
    "may_retry",
]

JOB_SCOPE = "job"
"""``Job.AlertRaised.scope`` of an alert on a job's own ``max_cost``."""


class PriceSchedule:
    """Prices from ``view.at`` on: ``price_at(gpu_type, t)`` for any ``t >= view.at``."""

    def __init__(self, view: PriceListView) -> None:
        self.start = check_utc(view.at)
        entries: dict[str, list[tuple[datetime, int]]] = {}
        for price in [*view.prices, *view.scheduled]:
            entry = (check_utc(price.effective_at), price.usd_micros_per_hour)
            entries.setdefault(price.gpu_type, []).append(entry)
        self._entries = {gpu_type: sorted(rows) for gpu_type, rows in entries.items()}

    def price_at(self, gpu_type: str, t: datetime) -> int:
        """Micro-dollars per GPU-hour in force at ``t``; NotFound if none was; ValueError before ``start``."""
        t = check_utc(t, where="t")
        if t < self.start:
            raise ValueError(f"{t.isoformat()} is before this schedule's start {self.start.isoformat()}")
        price = None
        for effective_at, usd_micros_per_hour in self._entries.get(gpu_type, ()):
            if effective_at > t:
                break
            price = usd_micros_per_hour
        if price is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise NotFound(
                f"no price for GPU type {gpu_type!r} at {t.isoformat()} (priced: {known})", where="gpu_type"
            )
        return price


def marginal_cost_usd_micros(
    usage: Mapping[str, int], key: UsageGroupKey, extra_ms: int, credited: Mapping[str, int] | None = None
) -> int:
    """How much a job's net cost grows when ``extra_ms`` are added to group ``key`` of its ``usage``.

    ``usage`` maps encoded group keys to summed milliseconds (``Job.usage``), ``credited`` to the
    milliseconds credited in them (``Job.credited``).
    """
    if extra_ms < 0:
        raise ValidationFailed(f"extra_ms must not be negative (got {extra_ms})", where="extra_ms")
    ms = usage.get(key.encode(), 0) - (credited or {}).get(key.encode(), 0)
    return cost_usd_micros(ms + extra_ms, key.gpu_count, key.usd_micros_per_hour) - cost_usd_micros(
        ms, key.gpu_count, key.usd_micros_per_hour
    )


class JobPolicy(NamedTuple):
    heartbeat_interval_ms: int
    max_retries: int


def job_policy(config: Mapping[str, Any] | None) -> JobPolicy:
    """The heartbeat interval and retry budget a job was submitted with (defaults if unreadable)."""
    try:
        parsed = parse_training_config(config)
    except ValidationFailed:  # a config stored before a schema change: the defaults still bound it
        parsed = TrainingConfig()
    return JobPolicy(round(parsed.heartbeat_interval_seconds * 1000), parsed.max_retries)


def may_retry(attempt: int, max_retries: int) -> bool:
    """Whether ``attempt`` may be followed by another: attempts run while ``attempt <= max_retries``."""
    return attempt <= max_retries


# ---- what UserApp.meter_usage takes and returns ----


class UsageRun(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive heartbeats of one attempt at one price in one period: one ``UsageMetered`` event."""

    job_id: str
    attempt: int
    first_seq: int
    last_seq: int
    gpu_type: str
    gpu_count: int
    gpu_ms: int
    usd_micros_per_hour: int
    period: str
    last_at: datetime
    heartbeats: int
    archive: str | None = None
    """The raw heartbeat archive the run was metered from, and its sha256 (``Job.UsageMetered`` v2)."""
    archive_sha256: str | None = None
    anchor_at: datetime | None = None
    """The attempt's clock anchor (``domain.cumulative.AttemptMeter``)."""
    anchor_ms: int | None = None

    @property
    def key(self) -> UsageGroupKey:
        return UsageGroupKey(
            self.period, self.job_id, self.gpu_type, self.gpu_count, self.usd_micros_per_hour
        )


class RejectedHeartbeats(msgspec.Struct, frozen=True, kw_only=True):
    """Heartbeats of one attempt the ledger refused to bill for one reason in one batch: one
    ``Job.HeartbeatsRejected`` event (``reason``: ``domain.job.HEARTBEAT_REJECTION_REASONS``)."""

    job_id: str
    attempt: int
    first_seq: int
    last_seq: int
    count: int
    reason: str


class MeteredJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job right after a batch's usage was recorded on it (not saved yet).

    ``usage`` and ``config`` are the job's own (read them, never change them); ``events``
    are the ``Job.UsageMetered`` events the batch recorded, in order.
    """

    job_id: str
    attempt: int
    state: JobState
    cost_usd_micros: int
    max_cost_usd_micros: int | None
    usage: Mapping[str, int]
    credited: Mapping[str, int]
    alerts: Sequence[str]
    config: Mapping[str, Any]
    events: Sequence[Any]


class JobAlert(NamedTuple):
    job_id: str
    threshold_pct: int
    spent_usd_micros: int
    limit_usd_micros: int


class BudgetAlert(NamedTuple):
    period: str
    threshold_pct: int
    spent_usd_micros: int


class LimitOrders(msgspec.Struct, frozen=True, kw_only=True):
    """The alerts to raise and the stops to request in the same commit as the usage.

    Job alerts are raised with scope ``JOB_SCOPE``; each job of ``stop_job_ids`` (metered in
    the batch or not) is asked to stop with ``stop_reason`` if its state is in ``stop_states``.
    """

    job_alerts: Sequence[JobAlert] = ()
    budget_alerts: Sequence[BudgetAlert] = ()
    stop_job_ids: Sequence[str] = ()
    stop_reason: str = ""
    stop_states: frozenset[JobState] = frozenset()


class UsagePlan(Protocol):
    """What ``UserApp.meter_usage`` asks of its caller (the ledger) while it holds the aggregates."""

    def usage_runs(
        self,
        job_id: str,
        attempt: int,
        metered_seq: Mapping[str, int],
        *,
        gpu_count: int = 1,
        gpu_type: str = "",
        attempts: Mapping[str, Mapping[str, Any]] | None = None,
        meters: Mapping[int, AttemptMeter] | None = None,
    ) -> Sequence[UsageRun]:
        """The runs to record on the job, given its last started attempt, last metered seqs,
        submitted GPU type and count, every started attempt as its ``Started`` recorded it
        (``Job.attempts``: lease and placement; a None type/count: priced as submitted), and what
        has been metered of each attempt (``Job.meters``: the totals cumulative heartbeats are
        metered against)."""
        ...

    def archive_runs(self, runs: Mapping[str, Sequence[UsageRun]]) -> Mapping[str, Sequence[UsageRun]]:
        """Every job's runs (``usage_runs``, asked of every job before any run is recorded), as they
        are to be recorded: each naming the archive of the heartbeats it was metered from, one object
        for the whole commit (written by ``before_commit``)."""
        ...

    def rejected_heartbeats(self, job_id: str) -> Sequence[RejectedHeartbeats]:
        """What ``usage_runs`` refused to bill of the job, to record in the same commit."""
        ...

    def before_commit(self) -> None:
        """Make durable what the runs refer to (the heartbeat archives); runs before the one save."""
        ...

    def period_spend(self, period: str, *, exclude: Collection[str]) -> int | None:
        """The user's net spend in ``period`` as saved (before this batch) on every job but ``exclude``
        (the jobs ``UserApp.meter_usage`` holds), or None if unknown (then no budget cap applies)."""
        ...

    def limit_orders(self, jobs: Sequence[MeteredJob], budget: BudgetView | None) -> LimitOrders:
        """The alerts and stops due once ``jobs`` (every job with usage recorded) are metered."""
        ...


class RefusedRun(NamedTuple):
    run: UsageRun
    reason: str


class MeteringResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``UserApp.meter_usage`` commit did (positions None: nothing was saved)."""

    unknown_job_ids: list[str]
    refused: list[RefusedRun]
    rejected: int = 0
    """``Job.HeartbeatsRejected`` events recorded."""
    alerts: int = 0
    stops: int = 0
    events: int = 0
    first_position: int | None = None
    last_position: int | None = None


class FixedUsage:
    """A ``UsagePlan`` for a caller that knows its runs beforehand (a test, a bench, a back-fill):
    each job gets its runs among ``runs``, then ``orders`` are given whatever the jobs now show.
    ``spend``: the user's net spend per period on the jobs not in ``runs`` (None: unknown, so the
    monthly budget caps nothing)."""

    def __init__(
        self,
        runs: Sequence[UsageRun],
        orders: LimitOrders | None = None,
        *,
        spend: Mapping[str, int] | None = None,
    ) -> None:
        self.runs, self.orders, self.spend = list(runs), orders or LimitOrders(), spend

    @property
    def job_ids(self) -> list[str]:
        """The jobs ``runs`` name, in first-seen order."""
        return list(dict.fromkeys(run.job_id for run in self.runs))

    def usage_runs(
        self, job_id: str, attempt: int, metered_seq: Mapping[str, int], **job: Any
    ) -> list[UsageRun]:
        return [run for run in self.runs if run.job_id == job_id]

    def archive_runs(self, runs: Mapping[str, Sequence[UsageRun]]) -> Mapping[str, Sequence[UsageRun]]:
        return runs

    def rejected_heartbeats(self, job_id: str) -> list[RejectedHeartbeats]:
        return []

    def before_commit(self) -> None:
        pass

    def period_spend(self, period: str, *, exclude: Collection[str]) -> int | None:
        return None if self.spend is None else self.spend.get(period, 0)

    def limit_orders(self, jobs: Sequence[MeteredJob], budget: BudgetView | None) -> LimitOrders:
        return self.orders
