"""What application queries and commands return: plain msgspec Structs, never aggregates.

Each ``*_view(aggregate)`` builds one from an aggregate's current state. ``version`` is the
aggregate's version; pass it back as ``expected_version`` to refuse a write if anything
changed meanwhile. Money is integer micro-dollars, times are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain.budget import Budget
from domain.catalogue import BaseModelCatalogue
from domain.dataset import Dataset
from domain.job import Job, JobState
from domain.model import Model
from domain.money import UsageLine
from domain.user import User

__all__ = [
    "BaseModelView",
    "BudgetView",
    "CheckpointView",
    "DatasetView",
    "JobView",
    "ModelView",
    "PriceListView",
    "PriceView",
    "UserCredentials",
    "UserView",
    "base_model_views",
    "budget_view",
    "dataset_view",
    "job_view",
    "model_view",
    "user_credentials",
    "user_view",
]


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str
    role: str
    status: str
    suspended_reason: str | None
    max_concurrent_jobs: int
    max_dataset_bytes: int
    registered_at: datetime
    last_login_at: datetime | None
    version: int


class UserCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """For the API's login check only: never send this to a client."""

    user_id: str
    email: str
    password_hash: str
    role: str
    status: str


class PriceView(msgspec.Struct, frozen=True, kw_only=True):
    gpu_type: str
    usd_micros_per_hour: int
    effective_at: datetime


class PriceListView(msgspec.Struct, frozen=True, kw_only=True):
    """Prices in force at ``at`` and changes scheduled after it, each sorted by GPU type."""

    at: datetime
    prices: list[PriceView]
    scheduled: list[PriceView]


class BaseModelView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    source_kind: str
    source: str
    chat_template: bool
    added_at: datetime


class DatasetView(msgspec.Struct, frozen=True, kw_only=True):
    dataset_id: str
    user_id: str
    filename: str
    size_bytes: int
    sha256: str
    status: str
    format: str | None
    rows: int | None
    stats: dict[str, Any]
    errors: list[dict[str, Any]]
    uploaded_at: datetime
    updated_at: datetime
    version: int


class CheckpointView(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    step: int
    path: str
    at: datetime


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    user_id: str
    state: JobState
    base_model: str
    dataset_id: str
    model_id: str
    config: dict[str, Any]
    gpu_type: str
    gpu_count: int
    max_cost_usd_micros: int | None
    estimate_usd_micros: int | None
    attempt: int
    step: int
    total_steps: int | None
    epoch: float | None
    loss: float | None
    tokens: int
    last_checkpoint: CheckpointView | None
    stop_reason: str | None
    error: str | None
    metrics: dict[str, Any]
    gpu_ms: int
    cost_usd_micros: int
    usage: list[UsageLine]
    alerts: list[str]
    """Alerts raised, as ``"<scope>:<threshold_pct>"``."""
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_heartbeat_at: datetime | None
    version: int


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    user_id: str
    job_id: str
    base_model: str
    kind: str
    weights_prefix: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]
    status: str
    registered_at: datetime
    updated_at: datetime
    version: int


class BudgetView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    monthly_limit_usd_micros: int | None
    thresholds_pct: list[int]
    alerts: dict[str, list[int]]
    """Thresholds alerted, per period (``"2026-03"``)."""
    version: int


def user_view(user: User) -> UserView:
    return UserView(
        user_id=user.user_id,
        email=user.email,
        role=user.role,
        status=user.status,
        suspended_reason=user.suspended_reason,
        max_concurrent_jobs=user.max_concurrent_jobs,
        max_dataset_bytes=user.max_dataset_bytes,
        registered_at=user.registered_at,
        last_login_at=user.last_login_at,
        version=user.version,
    )


def user_credentials(user: User) -> UserCredentials:
    return UserCredentials(
        user_id=user.user_id,
        email=user.email,
        password_hash=user.password_hash,
        role=user.role,
        status=user.status,
    )


def base_model_views(catalogue: BaseModelCatalogue) -> list[BaseModelView]:
    return [
        BaseModelView(
            name=name,
            source_kind=entry["source_kind"],
            source=entry["source"],
            chat_template=entry["chat_template"],
            added_at=entry["added_at"],
        )
        for name, entry in sorted(catalogue.models.items())
    ]


def dataset_view(ds: Dataset) -> DatasetView:
    return DatasetView(
        dataset_id=ds.dataset_id,
        user_id=ds.user_id,
        filename=ds.filename,
        size_bytes=ds.size_bytes,
        sha256=ds.sha256,
        status=ds.status,
        format=ds.format,
        rows=ds.rows,
        stats=dict(ds.stats),
        errors=[dict(e) for e in ds.errors],
        uploaded_at=ds.uploaded_at,
        updated_at=ds.updated_at,
        version=ds.version,
    )


def job_view(job: Job) -> JobView:
    cost = job.cost()
    point = job.checkpoint
    return JobView(
        job_id=job.job_id,
        user_id=job.user_id,
        state=JobState(job.state),
        base_model=job.base_model,
        dataset_id=job.dataset_id,
        model_id=job.model_id,
        config=dict(job.config),
        gpu_type=job.gpu_type,
        gpu_count=job.gpu_count,
        max_cost_usd_micros=job.max_cost_usd_micros,
        estimate_usd_micros=job.estimate_usd_micros,
        attempt=job.attempt,
        step=job.step,
        total_steps=job.total_steps,
        epoch=job.epoch,
        loss=job.loss,
        tokens=job.tokens,
        last_checkpoint=None if point is None else CheckpointView(**point),
        stop_reason=job.stop_reason,
        error=job.error,
        metrics=dict(job.metrics),
        gpu_ms=cost.gpu_ms,
        cost_usd_micros=cost.cost_usd_micros,
        usage=cost.lines,
        alerts=list(job.alerts),
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        last_heartbeat_at=job.last_heartbeat_at,
        version=job.version,
    )


def model_view(model: Model) -> ModelView:
    return ModelView(
        model_id=model.model_id,
        user_id=model.user_id,
        job_id=model.job_id,
        base_model=model.base_model,
        kind=model.kind,
        weights_prefix=model.weights_prefix,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        metrics=dict(model.metrics),
        status=model.status,
        registered_at=model.registered_at,
        updated_at=model.updated_at,
        version=model.version,
    )


def budget_view(budget: Budget) -> BudgetView:
    return BudgetView(
        user_id=budget.user_id,
        monthly_limit_usd_micros=budget.monthly_limit_usd_micros,
        thresholds_pct=list(budget.thresholds_pct),
        alerts={period: list(ts) for period, ts in sorted(budget.alerts.items())},
        version=budget.version,
    )
