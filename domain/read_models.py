"""Read models: what application queries and commands return, plain msgspec Structs, never aggregates.

Each is a read-only copy of one aggregate's current state (not to be confused with the
projections' JSON views, built from events). Each ``*_view(aggregate)`` builds one from an
aggregate's current state. ``version`` is the
aggregate's version; pass it back as ``expected_version`` to refuse a write if anything
changed meanwhile. Money is integer micro-dollars, times are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec

from domain.budget import Budget
from domain.catalogue import BaseModelCatalogue
from domain.dataset import Dataset
from domain.job import Job
from domain.job_states import JobState
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

V = TypeVar("V", bound=msgspec.Struct)


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


def _copied(cls: type[V], source: object, **given: Any) -> V:
    """A ``cls``: the fields in ``given``, the others ``source``'s same-named attributes.

    Mutable state (dicts, lists) must be given as copies, so a view never aliases an aggregate.
    """
    return cls(
        **{name: given[name] if name in given else getattr(source, name) for name in cls.__struct_fields__}
    )


def user_view(user: User) -> UserView:
    return _copied(UserView, user)


def user_credentials(user: User) -> UserCredentials:
    return _copied(UserCredentials, user)


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
    return _copied(DatasetView, ds, stats=dict(ds.stats), errors=[dict(e) for e in ds.errors])


def job_view(job: Job) -> JobView:
    cost = job.cost()
    point = job.checkpoint
    return _copied(
        JobView,
        job,
        state=JobState(job.state),
        config=dict(job.config),
        last_checkpoint=None if point is None else CheckpointView(**point),
        metrics=dict(job.metrics),
        gpu_ms=cost.gpu_ms,
        cost_usd_micros=cost.cost_usd_micros,
        usage=cost.lines,
        alerts=list(job.alerts),
    )


def model_view(model: Model) -> ModelView:
    return _copied(ModelView, model, metrics=dict(model.metrics))


def budget_view(budget: Budget) -> BudgetView:
    return _copied(
        BudgetView,
        budget,
        thresholds_pct=list(budget.thresholds_pct),
        alerts={period: list(ts) for period, ts in sorted(budget.alerts.items())},
    )
