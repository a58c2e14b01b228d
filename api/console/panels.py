"""What the console shows of a job, as text: one function per panel, used by the page when it is
rendered and by its live stream when something changed, so both always say the same.

Money is shown exactly (``domain.money.format_usd``: every micro-dollar), as the API's
``cost_usd_micros`` says it; a percentage is of a limit, capped at 100 for the bars.
"""

from __future__ import annotations

from typing import Any

from api import schemas
from domain.job_states import ACTIVE_STATES, TERMINAL_STATES, JobState
from domain.money import format_usd

__all__ = ["STOPPABLE_STATES", "duration", "job_panel", "job_row", "percent"]

NONE = "\u2013"
"""Shown where there is no value yet (an en dash)."""

STOPPABLE_STATES = ACTIVE_STATES - {JobState.STOPPING}
"""The states a stop button is offered in (``Job.request_stop``: stopping is already on its way)."""


def duration(ms: int) -> str:
    """``ms`` milliseconds as ``1 h 02 m 03 s`` (the larger units only when needed)."""
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} m {secs:02d} s"
    if minutes:
        return f"{minutes} m {secs:02d} s"
    return f"{ms / 1000:.1f} s"


def percent(part: int | float, whole: int | float | None) -> int | None:
    """``part`` as a whole percentage of ``whole`` (None without a positive ``whole``)."""
    if not whole or whole <= 0:
        return None
    return int(part * 100 // whole)


def _progress(step: int, total: int | None) -> str:
    return f"{step:,} / {total:,}" if total else f"{step:,}"


def job_row(status: schemas.JobStatus) -> dict[str, Any]:
    """A row of the jobs list: state, base model, progress and cost."""
    return {
        "job_id": status.job_id,
        "state": status.status,
        "base_model": status.base_model,
        "dataset_id": status.dataset_id,
        "progress": _progress(status.step, status.total_steps),
        "progress_pct": percent(status.step, status.total_steps),
        "cost": format_usd(status.cost_usd_micros),
        "cost_usd_micros": status.cost_usd_micros,
        "created_at": status.created_at or "",
    }


def job_panel(status: schemas.JobStatus, billing: schemas.Billing) -> dict[str, Any]:
    """The live figures of a job's page: state, progress, GPU time, cost against ``max_cost`` and
    the month's budget, alerts."""
    gpu = status.gpu_metrics
    period = billing.current_period
    limit = billing.budget.monthly_limit_usd_micros if billing.budget else None
    max_cost = status.max_cost_usd_micros
    return {
        "state": status.status,
        "activity": status.activity or "",
        "step": _progress(status.step, status.total_steps),
        "progress_value": status.step,
        "progress_max": status.total_steps or 0,
        "progress_pct": percent(status.step, status.total_steps),
        "epoch": NONE if status.epoch is None else f"{status.epoch:.2f}",
        "loss": NONE if status.loss is None else f"{status.loss:.4f}",
        "gpu_time": duration(gpu.gpu_ms),
        "gpu_ms": gpu.gpu_ms,
        "hardware": f"{gpu.gpu_count} x {gpu.gpu_type}" if gpu.gpu_type else "",
        "cost": format_usd(status.cost_usd_micros),
        "cost_usd_micros": status.cost_usd_micros,
        "max_cost": "no limit" if max_cost is None else format_usd(max_cost),
        "cost_pct": percent(status.cost_usd_micros, status.max_cost_usd_micros),
        "month": period.period,
        "month_spent": format_usd(period.total_cost_usd_micros),
        "month_budget": "no budget" if limit is None else format_usd(limit),
        "month_pct": percent(period.total_cost_usd_micros, limit),
        "alerts": [_alert(alert) for alert in status.alerts],
        "error": status.error or status.stop_reason or "",
        "terminal": status.status in TERMINAL_STATES,
        "stoppable": status.status in STOPPABLE_STATES,
        "checkpoints": len(status.checkpoints),
    }


def _alert(alert: schemas.Alert) -> str:
    of = "max_cost" if alert.scope == "job" else f"the {alert.period or 'monthly'} budget"
    return (
        f"{alert.threshold_pct}% of {of}: {format_usd(alert.spent_usd_micros)} of "
        f"{format_usd(alert.limit_usd_micros)}" + (f" ({alert.at})" if alert.at else "")
    )
