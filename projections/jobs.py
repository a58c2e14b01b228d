"""Jobs: ``jobs/<job_id>/status.json`` per job and the ``metadata/jobs.json`` listing.

``fold`` is pure: ``(JobState | None, event) -> JobState``. The listing row
changes only on state transitions (not on progress or metering), so a busy job
rewrites its own status.json, not the whole listing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from msgspec.structs import replace

from domain.job import Job
from domain.job_states import TERMINAL_STATES
from domain.job_states import JobState as Status
from domain.money import dollars, dollars_or_none
from projections import usage
from projections.listing import copied, opened, ordered_rows, started_by
from projections.render import event_name, event_names, iso, seconds
from views.rows import Checkpoint, Credit, GpuMetrics, JobRow, Retry

__all__ = [
    "EVENTS",
    "JobRow",
    "JobState",
    "JobsView",
    "StatusView",
    "fold",
    "item_view",
    "listed",
    "listing_view",
    "row",
]

EVENTS = event_names(
    Job.Submitted,
    Job.Queued,
    Job.Started,
    Job.ProgressReported,
    Job.ActivityReported,
    Job.CheckpointSaved,
    Job.UsageMetered,
    Job.UsageCredited,
    Job.AlertRaised,
    Job.StopRequested,
    Job.Stopped,
    Job.Succeeded,
    Job.Failed,
    Job.Retrying,
    Job.Lost,
    Job.PauseRequested,
    Job.Paused,
    Job.Resumed,
)

# event -> the job state it leads to (events not listed keep the state)
_STATES = {
    "Job.Queued": Status.QUEUED,
    "Job.Started": Status.RUNNING,
    "Job.StopRequested": Status.STOPPING,
    "Job.Stopped": Status.STOPPED,
    "Job.Succeeded": Status.SUCCEEDED,
    "Job.Failed": Status.FAILED,
    "Job.Retrying": Status.RETRYING,
    "Job.Lost": Status.LOST,
    "Job.PauseRequested": Status.PAUSING,
    "Job.Paused": Status.PAUSED,
    "Job.Resumed": Status.QUEUED,
}


class Alert(msgspec.Struct, frozen=True):
    scope: str
    threshold_pct: int
    spent: Decimal
    spent_usd_micros: int
    limit: Decimal
    limit_usd_micros: int
    at: str | None


def _with_credit(credits: tuple[Credit, ...], new: Credit) -> tuple[Credit, ...]:
    for i, credit in enumerate(credits):
        if (credit.attempt, credit.reason) == (new.attempt, new.reason):
            merged = replace(new, gpu_ms=credit.gpu_ms + new.gpu_ms)
            return (*credits[:i], merged, *credits[i + 1 :])
    return (*credits, new)


class JobState(started_by(Job.Submitted, leave_out=("config",)), frozen=True):  # type: ignore[misc]
    """Everything the job views show, folded from the job's events: what ``Job.Submitted`` records
    (but the training config), then the rest."""

    created_at: datetime
    updated_at: datetime
    status_at: datetime
    status: str = Status.SUBMITTED
    attempt: int = 0
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    tokens: int = 0
    checkpoints: tuple[Checkpoint, ...] = ()
    usage: tuple[usage.Group, ...] = ()
    alerts: tuple[Alert, ...] = ()
    retries: tuple[Retry, ...] = ()
    stop_reason: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    activity: str | None = None
    credits: tuple[Credit, ...] = ()


def fold(job: JobState | None, event: Any) -> JobState:
    """The job after one of its events (pure)."""
    if job is None:
        return opened(JobState, event, "Job.Submitted", at_fields=("created_at", "updated_at", "status_at"))
    name = event_name(event)
    at: datetime = event.at
    changes: dict[str, Any] = {"updated_at": at}
    if job.activity is not None and (name in _STATES or name == "Job.ProgressReported"):
        changes["activity"] = None  # training (or the attempt) moved on
    if name in _STATES and _STATES[name] != job.status:
        changes.update(status=_STATES[name], status_at=at)
        if _STATES[name] in TERMINAL_STATES:
            changes["finished_at"] = at
    if name in ("Job.Started", "Job.ProgressReported", "Job.CheckpointSaved"):
        changes["last_heartbeat_at"] = at
    if name == "Job.Started":
        changes["attempt"] = event.attempt
        changes["started_at"] = job.started_at or at
    elif name == "Job.ProgressReported":
        changes.update(
            attempt=event.attempt,
            step=event.step,
            total_steps=event.total_steps,
            epoch=event.epoch,
            loss=event.loss,
            tokens=event.tokens,
        )
    elif name == "Job.ActivityReported":
        changes["activity"] = event.activity
    elif name == "Job.CheckpointSaved":
        point = Checkpoint(attempt=event.attempt, step=event.step, path=event.path, at=iso(at))
        changes["checkpoints"] = (*job.checkpoints, point)
    elif name == "Job.UsageMetered":
        changes["usage"] = usage.add(job.usage, event)
    elif name == "Job.UsageCredited":
        changes["usage"] = usage.credit(job.usage, event)
        credit = Credit(attempt=event.attempt, reason=event.reason, gpu_ms=event.gpu_ms, at=iso(at))
        changes["credits"] = _with_credit(job.credits, credit)
    elif name == "Job.AlertRaised":
        alert = Alert(
            scope=event.scope,
            threshold_pct=event.threshold_pct,
            spent=dollars(event.spent_usd_micros),
            spent_usd_micros=event.spent_usd_micros,
            limit=dollars(event.limit_usd_micros),
            limit_usd_micros=event.limit_usd_micros,
            at=iso(at),
        )
        changes["alerts"] = (*job.alerts, alert)
    elif name in ("Job.StopRequested", "Job.Stopped"):
        changes["stop_reason"] = event.reason
        if name == "Job.Stopped" and event.step is not None:
            changes["step"] = event.step
    elif name == "Job.Succeeded":
        changes.update(metrics=event.metrics, model_id=event.model_id or job.model_id)
    elif name == "Job.Failed":
        changes["error"] = event.error
    elif name == "Job.Retrying":
        changes["attempt"] = event.attempt
        changes["retries"] = (*job.retries, Retry(attempt=event.attempt, reason=event.reason, at=iso(at)))
    elif name == "Job.Lost" and event.last_heartbeat_at is not None:
        changes["last_heartbeat_at"] = event.last_heartbeat_at
    elif name == "Job.Paused":
        changes["step"] = event.step
    return replace(job, **changes)


# -- views ---------------------------------------------------------------


class StatusView(msgspec.Struct, omit_defaults=True):
    """``jobs/<job_id>/status.json``.

    ``activity`` (what a running attempt is busy with before its first step, e.g. converting its
    base model) is written only while there is one, so the views of older histories are unchanged.
    ``cost`` is net (what the user pays); once anything was credited, ``charged``, ``credited``,
    ``credited_gpu_ms`` and ``credits`` (per attempt and reason) are written too. ``start_from`` (the
    checkpoint or model the job's training started from: kind, id, path) is written only for a job
    started from one.
    """

    position: int
    job_id: str
    status: str
    model_id: str
    dataset_id: str
    base_model: str
    attempt: int
    step: int
    total_steps: int | None
    epoch: float | None
    loss: float | None
    tokens: int
    checkpoints: tuple[Checkpoint, ...]
    gpu_metrics: GpuMetrics
    cost: Decimal
    cost_usd_micros: int
    estimate: Decimal | None
    estimate_usd_micros: int | None
    max_cost: Decimal | None
    max_cost_usd_micros: int | None
    alerts: tuple[Alert, ...]
    retries: tuple[Retry, ...]
    stop_reason: str | None
    error: str | None
    metrics: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    last_heartbeat_at: str | None
    updated_at: str | None
    activity: str | None = None
    charged: Decimal | None = None
    charged_usd_micros: int | None = None
    credited: Decimal | None = None
    credited_usd_micros: int | None = None
    credited_gpu_ms: int | None = None
    credits: tuple[Credit, ...] = ()
    start_from: dict[str, Any] | None = None


def item_view(job: JobState, position: int) -> StatusView:
    cost = usage.cost_usd_micros(job.usage)
    ms = usage.gpu_ms(job.usage)
    return copied(
        StatusView,
        job,
        position=position,
        gpu_metrics=GpuMetrics(
            gpu_type=job.gpu_type, gpu_count=job.gpu_count, current_duration_seconds=seconds(ms), gpu_ms=ms
        ),
        cost=dollars(cost),
        cost_usd_micros=cost,
        estimate=dollars_or_none(job.estimate_usd_micros),
        max_cost=dollars_or_none(job.max_cost_usd_micros),
        **usage.credit_fields(job.usage),
    )


class JobsView(msgspec.Struct):
    """``metadata/jobs.json``: every job, oldest first (created_at, then job_id)."""

    position: int
    jobs: list[JobRow]


def row(job: JobState) -> JobRow:
    """The job's listing row; its ``updated_at`` is the time of the last state change."""
    return copied(JobRow, job, updated_at=iso(job.status_at))


def listed(job: JobState) -> tuple[Any, ...]:
    """What the listing row is made of, uncooked: a cheap test of whether the row changed."""
    return (job.status, job.status_at, job.model_id)


def listing_view(jobs: list[JobState], position: int) -> JobsView:
    return JobsView(position, ordered_rows(jobs, "job_id", row))
