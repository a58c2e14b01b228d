"""Dependencies (``provide_*``): the runtime, the caller, and services bound to a partition.

A service works on the partition of the ``{user_id}`` in the path when there
is one (the guards have already checked the caller may use it), else on the
caller's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter, QueryParameter

from api.auth import Principal
from api.guards import caller_of
from api.services import AccountService, BillingService, DatasetService, JobService, ModelService
from api.services.fine_tuning import FineTuningService
from api.services.keys import KeyService
from api.services.metrics import MetricsService
from api.services.pages import DEFAULT_LIMIT, MAX_LIMIT, PageRequest
from api.services.serving import ServingService
from domain.errors import ValidationFailed
from domain.ids import ID_PATTERN
from runtime.context import Runtime

__all__ = [
    "BaseModelFilter",
    "PathId",
    "dependencies",
    "provide_accounts",
    "provide_billing",
    "provide_caller",
    "provide_datasets",
    "provide_fine_tuning",
    "provide_jobs",
    "provide_keys",
    "provide_metrics",
    "provide_models",
    "provide_page",
    "provide_runtime",
    "provide_serving",
]

PathId = Annotated[
    str,
    Parameter(
        pattern=ID_PATTERN, min_length=1, max_length=64, description="an id: letters, digits, '-', '_'"
    ),
]
"""A path id as the OpenAPI schema shows it (``requires_valid_ids`` enforces it first)."""


BaseModelFilter = Annotated[
    str | None,
    QueryParameter(name="base_model", max_length=64, description="keep only those on this base model"),
]


_TIME: dict[str, Any] = {
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$",
    "max_length": 40,
    "schema_extra": {"format": "date-time"},
}
"""An ISO 8601 time with a date and a time of day (UTC without an offset); a number is no time."""


def provide_page(
    limit: Annotated[
        int | None,
        Parameter(
            ge=1,
            le=MAX_LIMIT,
            description=f"a page of at most this many, newest first (default {DEFAULT_LIMIT} with "
            "``after``); without ``limit`` and ``after``, every one, oldest first",
        ),
    ] = None,
    after: Annotated[
        str | None,
        Parameter(max_length=200, description="the ``next`` cursor of the previous page: the page after it"),
    ] = None,
    created_from: Annotated[
        str | None, Parameter(description="keep only those created at or after this time", **_TIME)
    ] = None,
    created_to: Annotated[
        str | None, Parameter(description="keep only those created before this time", **_TIME)
    ] = None,
) -> PageRequest:
    """The paging parameters of a list route (``api.services.pages``)."""
    return PageRequest(
        limit=limit,
        after=after,
        created_from=_time(created_from, "created_from"),
        created_to=_time(created_to, "created_to"),
    )


def _time(value: str | None, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"not a time: {value!r:.50} (2026-03-14T10:30:00Z)", where=where) from None


def provide_runtime(state: State) -> Runtime:
    return state.runtime  # type: ignore[no-any-return]


def provide_caller(request: Request[Any, Any, Any]) -> Principal:
    return caller_of(request)


def _subject(request: Request[Any, Any, Any]) -> str:
    return request.path_params.get("user_id") or caller_of(request).user_id


def provide_jobs(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> JobService:
    return JobService(runtime, _subject(request))


def provide_datasets(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> DatasetService:
    return DatasetService(runtime, _subject(request))


def provide_fine_tuning(
    runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]
) -> FineTuningService:
    return FineTuningService(runtime, caller_of(request).user_id)


def provide_metrics(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> MetricsService:
    return MetricsService(runtime, caller_of(request).user_id)


def provide_models(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> ModelService:
    return ModelService(runtime, _subject(request))


def provide_billing(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> BillingService:
    return BillingService(runtime, _subject(request))


def provide_serving(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> ServingService:
    return ServingService(runtime, caller_of(request).user_id)


def provide_keys(runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]) -> KeyService:
    return KeyService(runtime, caller_of(request).user_id)


def provide_accounts(runtime: NamedDependency[Runtime], state: State) -> AccountService:
    return AccountService(runtime, state.login_throttle)


dependencies = {
    "runtime": Provide(provide_runtime, sync_to_thread=False),
    "caller": Provide(provide_caller, sync_to_thread=False),
    "jobs": Provide(provide_jobs, sync_to_thread=False),
    "datasets": Provide(provide_datasets, sync_to_thread=False),
    "models": Provide(provide_models, sync_to_thread=False),
    "metrics": Provide(provide_metrics, sync_to_thread=False),
    "billing": Provide(provide_billing, sync_to_thread=False),
    "accounts": Provide(provide_accounts, sync_to_thread=False),
    "serving": Provide(provide_serving, sync_to_thread=False),
    "keys": Provide(provide_keys, sync_to_thread=False),
    "fine_tuning": Provide(provide_fine_tuning, sync_to_thread=False),
    "page": Provide(provide_page, sync_to_thread=False),
}
