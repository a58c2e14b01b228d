"""Read models: what application queries and commands return, plain msgspec Structs, never aggregates.

Each is a read-only copy of one aggregate's current state (not to be confused with the
projections' JSON views, built from events): its fields are those the aggregate declares
(``JobFields`` ...), less what stays inside, plus what a reader needs computed. Each
``*_view(aggregate)`` builds one from an aggregate's current state. ``version`` is the
aggregate's version; pass it back as ``expected_version`` to refuse a write if anything
changed meanwhile. Money is integer micro-dollars, times are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, get_type_hints

import msgspec

from domain.budget import Budget, BudgetFields
from domain.catalogue import BaseModelCatalogue
from domain.dataset import Dataset, DatasetFields
from domain.job import Job, JobFields
from domain.job_states import JobState
from domain.model import Model, ModelFields
from domain.money import UsageLine
from domain.user import User, UserFields

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


def _declared(fields: type, *, leave_out: tuple[str, ...] = ()) -> type[msgspec.Struct]:
    """A frozen Struct of the attributes an aggregate declares in ``fields``, in order, less ``leave_out``."""
    hints = get_type_hints(fields)
    kept = [(name, hint) for name, hint in hints.items() if name not in leave_out]
    return msgspec.defstruct(fields.__name__, kept, frozen=True, kw_only=True, module=__name__)


class UserView(
    _declared(UserFields, leave_out=("password_hash", "updated_at")),  # type: ignore[misc]
    frozen=True,
    kw_only=True,
):
    """A user's declared fields, less the password hash and ``updated_at``."""

    version: int


class UserCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """For the API's login check only: never send this to a client."""

    user_id: str
    email: str
    password_hash: str
    role: str
    status: str
    token_version: int


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


class DatasetView(_declared(DatasetFields), frozen=True, kw_only=True):  # type: ignore[misc]
    """A dataset's declared fields."""

    version: int


class CheckpointView(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    step: int
    path: str
    at: datetime
    gpu_ms_total: int | None = None
    """The attempt's cumulative GPU milliseconds when it was written (None: unknown)."""


_JOB_BOOKKEEPING = (
    "progress_attempt",
    "checkpoint",
    "usage",
    "metered_ms",
    "meter_anchors",
    "credited",
    "attempt_usage",
    "attempt_credited",
    "faults",
)


class JobView(
    _declared(JobFields, leave_out=_JOB_BOOKKEEPING),  # type: ignore[misc]
    frozen=True,
    kw_only=True,
):
    """A job's declared fields, less its bookkeeping, with its cost summed (``Job.cost``): ``gpu_ms``
    charged, ``cost_usd_micros`` net (what the user pays), ``credited_*`` what was credited."""

    last_checkpoint: CheckpointView | None
    gpu_ms: int
    cost_usd_micros: int
    credited_gpu_ms: int = 0
    credited_usd_micros: int = 0
    usage: list[UsageLine]
    version: int


class ModelView(_declared(ModelFields), frozen=True, kw_only=True):  # type: ignore[misc]
    """A model's declared fields."""

    version: int


class BudgetView(
    _declared(BudgetFields, leave_out=("updated_at",)),  # type: ignore[misc]
    frozen=True,
    kw_only=True,
):
    """A budget's declared fields, less ``updated_at``."""

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
        start_from=None if job.start_from is None else dict(job.start_from),
        metrics=dict(job.metrics),
        gpu_ms=cost.gpu_ms,
        cost_usd_micros=cost.cost_usd_micros,
        credited_gpu_ms=cost.credited_gpu_ms,
        credited_usd_micros=cost.credited_usd_micros,
        usage=cost.lines,
        alerts=list(job.alerts),
        metered_seq=dict(job.metered_seq),
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
