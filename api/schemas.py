"""Request and response shapes of the HTTP API (msgspec Structs), shared by server and CLI.

This module imports nothing from the server side (only msgspec and the
standard library), so the CLI can import it alone. Money travels twice: as
integer micro-dollars (``*_usd_micros``, authoritative) and as an exact
decimal string of dollars (``"156.78"``). Times are ISO 8601 UTC strings.

Every error, on every route, has one shape::

    {"error": {"code": "not_found", "message": "no job job_1", "where": "job_id"}}

The rows of the listings and the items nested in views (``JobRow``, ``Checkpoint``, ``Credit``, ``Retry``,
``GpuMetrics``, ``DatasetRow``, ``LineError``, ``ModelRow``, ``Rate``, ``GpuUsage``,
``BudgetView``, ``GpuPrice``, ``ScheduledPrice``) are declared once, in ``views.rows`` (the
projections write them into the stored views; it imports only msgspec), and re-exported here.
The top-level views keep their own Structs in ``projections`` (a stored view puts ``position``
first, a reply last); ``tests/property/test_views_as_served.py`` checks that every view the
projections write decodes strictly into the schema served here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from views.rows import (
    BudgetView,
    Checkpoint,
    Credit,
    DatasetRow,
    GpuMetrics,
    GpuPrice,
    GpuUsage,
    JobRow,
    LineError,
    ModelRow,
    Retry,
    ServedModel,
    ServingPrice,
    StartPoint,
)

__all__ = [
    "ApiKey",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyList",
    "BaseModelInfo",
    "BaseModelList",
    "Billing",
    "BillingHistory",
    "BudgetRequest",
    "BudgetView",
    "CheckpointInfo",
    "CheckpointList",
    "Credit",
    "Dataset",
    "DatasetList",
    "DatasetRow",
    "Deleted",
    "ErrorBody",
    "ErrorDetail",
    "Hardware",
    "HardwareOffer",
    "HardwareSource",
    "Health",
    "JobCost",
    "JobCostReport",
    "JobEvent",
    "JobEvents",
    "JobList",
    "JobMetrics",
    "JobRow",
    "JobStatus",
    "LoginRequest",
    "LoginResponse",
    "MetricPoint",
    "Model",
    "ModelList",
    "ModelRow",
    "MonthlyReport",
    "Period",
    "Pricing",
    "ReportRow",
    "ServedModel",
    "ServingPrice",
    "ServingReportRow",
    "StartJobRequest",
    "StartJobResponse",
    "StartPoint",
    "StopJobResponse",
]

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", max_length=64)]
Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]
_PERCENTS_SCHEMA = {"items": {"type": "integer", "minimum": 1, "maximum": 100}, "unique_items": True}


class _Out(msgspec.Struct, kw_only=True):
    """Base of responses: every field has a default so a newer view still decodes."""


# -- errors ---------------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    """What went wrong: a stable ``code``, a human ``message``, and the field or line (``where``)."""

    code: str
    message: str
    where: str | None = None


class ErrorBody(msgspec.Struct):
    """The body of every response with status >= 400."""

    error: ErrorDetail


# -- auth and health ------------------------------------------------------------------------


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[
        str, msgspec.Meta(min_length=3, max_length=254, extra_json_schema={"extra": {"format": "email"}})
    ]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginResponse(msgspec.Struct):
    """A bearer token: send it as ``Authorization: Bearer <token>`` until ``expires_at``."""

    token: str
    user_id: str
    email: str
    role: str
    expires_at: str
    token_type: str = "bearer"


class Health(msgspec.Struct):
    status: Literal["ok"]
    version: str
    bucket: str
    time: str


# -- jobs -----------------------------------------------------------------------------------


class StartJobRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Start a fine-tuning job; ``config`` is a mapping or YAML text (see the config table)."""

    base_model: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    dataset_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    config: dict[str, Any] | str = msgspec.field(default_factory=dict)
    dry_run: bool = False
    force: bool = False
    start_from: Annotated[str, msgspec.Meta(min_length=1, max_length=120)] | None = None
    """A checkpoint id (``<job_id>:<step>``, or ``<job_id>`` for its latest usable checkpoint) or a
    model id of the caller's, on the same base model and method: training starts from its weights
    (fresh optimizer, schedule and step count)."""


class StartJobResponse(_Out):
    """The submitted job (or, with ``dry_run``, what would be submitted)."""

    job_id: str | None = None
    status: str = "submitted"
    dry_run: bool = False
    base_model: str = ""
    dataset_id: str = ""
    model_id: str | None = None
    gpu_type: str = ""
    gpu_count: int = 1
    estimate: Decimal | None = None
    estimate_usd_micros: int | None = None
    max_cost: Decimal | None = None
    max_cost_usd_micros: int | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    warnings: list[str] = msgspec.field(default_factory=list)
    start_from: StartPoint | None = None
    estimate_low_usd_micros: int | None = None
    """The estimate's range (``estimate_usd_micros`` is the expected figure); the budget check uses
    the high end."""
    estimate_high_usd_micros: int | None = None
    estimate_source: str | None = None
    """Where it comes from: ``measured`` (your earlier jobs like it), ``calibration``, ``assumed``."""
    estimate_basis: str | None = None
    """The source in words: ``measured from 3 jobs``, ``calibration``, ``assumed``."""
    estimate_steps: int | None = None
    """The optimizer steps the trainer will take (every example counted: see ``domain.estimate``)."""
    estimate_tokens: int | None = None


class StopJobResponse(_Out):
    job_id: str = ""
    status: str = ""


class Alert(_Out):
    scope: str = ""
    threshold_pct: int = 0
    spent: Decimal | None = None
    spent_usd_micros: int = 0
    limit: Decimal | None = None
    limit_usd_micros: int = 0
    at: str | None = None
    period: str | None = None


class JobStatus(_Out):
    """A job's ``status.json``: state, progress, checkpoints, GPU time and cost so far."""

    job_id: str = ""
    status: str = ""
    position: int = 0
    model_id: str | None = None
    dataset_id: str = ""
    base_model: str = ""
    attempt: int = 0
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    tokens: int = 0
    checkpoints: list[Checkpoint] = msgspec.field(default_factory=list)
    gpu_metrics: GpuMetrics = msgspec.field(default_factory=GpuMetrics)
    cost: Decimal = Decimal(0)
    cost_usd_micros: int = 0
    estimate: Decimal | None = None
    estimate_usd_micros: int | None = None
    max_cost: Decimal | None = None
    max_cost_usd_micros: int | None = None
    alerts: list[Alert] = msgspec.field(default_factory=list)
    retries: list[Retry] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_heartbeat_at: str | None = None
    updated_at: str | None = None
    activity: str | None = None
    """What a running attempt is busy with before its first step (e.g. converting its base model on
    first use); absent otherwise."""
    charged: Decimal | UnsetType = UNSET
    charged_usd_micros: int | UnsetType = UNSET
    credited: Decimal | UnsetType = UNSET
    credited_usd_micros: int | UnsetType = UNSET
    credited_gpu_ms: int | UnsetType = UNSET
    credits: list[Credit] = msgspec.field(default_factory=list)
    """``cost`` is net (what is paid); once anything was credited, what was charged and credited,
    and the credits per attempt and reason."""
    start_from: StartPoint | None = None
    """The checkpoint or model the job's training started from; absent: its base model."""


class JobList(_Out):
    """A page of the jobs, newest first, or all of them oldest first (no ``limit``, no ``after``:
    the reply of clients that do not page). ``has_more``: older ones match too; ``next``: the
    cursor to pass as ``after`` for them (None at the end)."""

    jobs: list[JobRow] = msgspec.field(default_factory=list)
    position: int = 0
    has_more: bool = False
    next: str | None = None


class JobEvent(_Out):
    """One event in a job's history: ``type`` like ``ProgressReported``, ``data`` its fields."""

    seq: int = 0
    at: str | None = None
    type: str = ""
    summary: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class JobEvents(_Out):
    job_id: str = ""
    events: list[JobEvent] = msgspec.field(default_factory=list)


class CheckpointInfo(_Out):
    """One checkpoint of a job: its id (``<job_id>:<step>``, what ``start_from`` takes), where in
    training it was saved, and the losses at that step from the attempt's metrics (``eval_loss``
    only when the job has a validation split and evaluated at that step)."""

    checkpoint_id: str = ""
    attempt: int = 0
    step: int = 0
    at: str | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    available: bool = True
    """False once it was pruned (a job keeps its latest checkpoints): it can no longer be started from."""


class CheckpointList(_Out):
    """A job's checkpoints, oldest first."""

    job_id: str = ""
    checkpoints: list[CheckpointInfo] = msgspec.field(default_factory=list)


class MetricPoint(_Out):
    """One logged point of a job's training: a step's train ``loss`` (with ``epoch`` and ``tokens``) or
    the validation loss (``eval_loss``) at a step, as attempt ``attempt`` logged it at ``at``."""

    step: int = 0
    attempt: int = 0
    at: str | None = None
    loss: float | None = None
    eval_loss: float | None = None
    epoch: float | None = None
    tokens: int | None = None


class JobMetrics(_Out):
    """A job's loss curves, oldest step first: ``train`` (a point a step) and ``eval`` (a point an
    evaluation). A step that a later attempt ran again (after resuming from an earlier checkpoint)
    shows the later attempt's values. ``last_step``: the highest step here, what ``after_step``
    takes next to ask for newer points only."""

    job_id: str = ""
    train: list[MetricPoint] = msgspec.field(default_factory=list)
    eval: list[MetricPoint] = msgspec.field(default_factory=list)
    last_step: int = 0


# -- datasets -------------------------------------------------------------------------------


class Dataset(_Out):
    """A dataset's ``metadata.json``: size, digest, format, rows, statistics, validation errors."""

    dataset_id: str = ""
    filename: str = ""
    status: str = ""
    size_bytes: int = 0
    sha256: str = ""
    format: str | None = None
    rows: int | None = None
    stats: dict[str, Any] | None = None
    errors: list[LineError] = msgspec.field(default_factory=list)
    error_count: int | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    position: int = 0


class DatasetList(_Out):
    """A page of the datasets, newest first, or all of them oldest first (no ``limit``, no ``after``:
    the reply of clients that do not page). ``has_more``: older ones match too; ``next``: the
    cursor to pass as ``after`` for them (None at the end)."""

    datasets: list[DatasetRow] = msgspec.field(default_factory=list)
    position: int = 0
    has_more: bool = False
    next: str | None = None


class Deleted(_Out):
    """What a DELETE removed."""

    id: str = ""
    status: str = "deleted"


# -- API keys -------------------------------------------------------------------------------


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A name to tell the key apart by (``ci``, ``laptop``)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]


class ApiKey(_Out):
    """A key as listed: never its secret. ``status`` is ``active`` or ``revoked``."""

    key_id: str = ""
    name: str = ""
    status: str = "active"
    created_at: str | None = None
    revoked_at: str | None = None


class ApiKeyCreated(ApiKey):
    """The new key: ``key`` is the bearer token itself, shown this once (only its hash is kept)."""

    key: str = ""


class ApiKeyList(_Out):
    keys: list[ApiKey] = msgspec.field(default_factory=list)


# -- models ---------------------------------------------------------------------------------


class Model(_Out):
    """A fine-tuned model's ``metadata.json``; served with ``sha256`` and ``size_bytes`` those of its
    download (the tar ``model download`` saves: ``sha256sum`` it to check), ``weights_sha256`` the
    digest of the weights' ``SHA256SUMS`` manifest."""

    model_id: str = ""
    status: str = ""
    job_id: str | None = None
    base_model: str = ""
    kind: str = ""
    weights_prefix: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    position: int = 0
    weights_sha256: str | None = None
    stop_gate: dict[str, Any] | None = None
    """Whether the model ended its answer to a prompt before it was published (``stops``; false: it
    never stops generating, a flag, not a refusal); absent for a model not checked."""


class ModelList(_Out):
    """A page of the models, newest first, or all of them oldest first (no ``limit``, no ``after``:
    the reply of clients that do not page). ``has_more``: older ones match too; ``next``: the
    cursor to pass as ``after`` for them (None at the end)."""

    models: list[ModelRow] = msgspec.field(default_factory=list)
    position: int = 0
    has_more: bool = False
    next: str | None = None


class BaseModelInfo(_Out):
    name: str = ""
    source_kind: str = ""
    description: str = ""


class BaseModelList(_Out):
    base_models: list[BaseModelInfo] = msgspec.field(default_factory=list)


# -- billing --------------------------------------------------------------------------------


class JobCost(_Out):
    """One job's cost on one GPU type in a period."""

    job_id: str = ""
    gpu_type: str = ""
    period: str | None = None
    duration_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    gpu_seconds: Decimal = Decimal(0)
    cost_usd_micros: int = 0
    charged: Decimal | UnsetType = UNSET
    charged_usd_micros: int | UnsetType = UNSET
    credited: Decimal | UnsetType = UNSET
    credited_usd_micros: int | UnsetType = UNSET
    credited_gpu_ms: int | UnsetType = UNSET


class Period(_Out):
    """One calendar month (UTC) of usage, per GPU type and per job."""

    period: str = ""
    start_date: str = ""
    total_cost: Decimal = Decimal(0)
    total_cost_usd_micros: int = 0
    usage_breakdown: dict[str, GpuUsage] = msgspec.field(default_factory=dict)
    jobs: list[JobCost] = msgspec.field(default_factory=list)
    alerts: list[Alert] = msgspec.field(default_factory=list)
    charged: Decimal | UnsetType = UNSET
    charged_usd_micros: int | UnsetType = UNSET
    credited: Decimal | UnsetType = UNSET
    credited_usd_micros: int | UnsetType = UNSET
    credited_gpu_ms: int | UnsetType = UNSET
    serving: list[ServedModel] | UnsetType = UNSET
    """Chat completions in the month, per model and price (only in a month with any)."""
    serving_cost: Decimal | UnsetType = UNSET
    serving_cost_usd_micros: int | UnsetType = UNSET
    """The part of ``total_cost_usd_micros`` that is serving."""


class Billing(_Out):
    """``GET /billing/usage``: the current month, the budget and what remains of it."""

    current_period: Period = msgspec.field(default_factory=Period)
    budget: BudgetView | None = None
    alerts: list[Alert] = msgspec.field(default_factory=list)
    remaining: Decimal | None = None
    remaining_usd_micros: int | None = None
    position: int = 0


class BillingHistory(_Out):
    """Closed months, newest first: all of them, or a page with ``limit`` / ``after``. ``has_more``:
    older months follow; ``next``: the cursor to pass as ``after`` for them (None at the end)."""

    periods: list[Period] = msgspec.field(default_factory=list)
    position: int = 0
    has_more: bool = False
    next: str | None = None


class Pricing(_Out):
    """Price per GPU-hour of each GPU type, and of chat completions per million tokens per base model
    (``serving``; ``"*"``: any base model without a price of its own)."""

    currency: str = "USD"
    prices: dict[str, GpuPrice] = msgspec.field(default_factory=dict)
    position: int = 0
    serving: dict[str, ServingPrice] | UnsetType = UNSET


class HardwareOffer(_Out):
    """Up to ``gpu_count`` devices of ``gpu_type`` for one job."""

    gpu_type: str = ""
    gpu_count: int = 0


class HardwareSource(_Out):
    """What one source of hardware (a dispatcher's backend, ``operator``) offers, since ``offered_at``."""

    source: str = ""
    offers: list[HardwareOffer] = msgspec.field(default_factory=list)
    offered_at: str | None = None


class Hardware(_Out):
    """The hardware a job may ask for (``offers``: every source's together), and each source's offer.
    Before any source offered hardware, ``offers`` is what the platform assumes (``cpu`` x1) and
    ``sources`` is empty."""

    offers: list[HardwareOffer] = msgspec.field(default_factory=list)
    sources: list[HardwareSource] = msgspec.field(default_factory=list)
    position: int = 0


class JobCostReport(_Out):
    """``GET /billing/job/{job_id}/cost``: a job's cost so far, live: ``cost`` is net (what is paid),
    ``charged`` what was metered, ``credited`` what was credited (platform faults, limits)."""

    job_id: str = ""
    status: str = ""
    cost: Decimal = Decimal(0)
    cost_usd_micros: int = 0
    charged: Decimal = Decimal(0)
    charged_usd_micros: int = 0
    credited: Decimal = Decimal(0)
    credited_usd_micros: int = 0
    credited_gpu_ms: int = 0
    credits: list[Credit] = msgspec.field(default_factory=list)
    estimate: Decimal | None = None
    estimate_usd_micros: int | None = None
    max_cost: Decimal | None = None
    max_cost_usd_micros: int | None = None
    gpu_metrics: GpuMetrics = msgspec.field(default_factory=GpuMetrics)
    periods: list[JobCost] = msgspec.field(default_factory=list)


class ReportRow(_Out):
    """One job's usage at one price in the month; ``seconds`` is wall time on its ``gpu_count`` GPUs."""

    job_id: str = ""
    gpu_type: str = ""
    gpu_count: int = 1
    seconds: Decimal = Decimal(0)
    cost_per_hour: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    gpu_ms: int = 0
    usd_micros_per_hour: int = 0
    cost_usd_micros: int = 0
    """Net: what is paid."""
    charged_usd_micros: int | UnsetType = UNSET
    credited_gpu_ms: int | UnsetType = UNSET
    credited_usd_micros: int | UnsetType = UNSET


class ServingReportRow(_Out):
    """Chat completions of one model at one price in the month."""

    model: str = ""
    base_model: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_ms: int = 0
    prompt_usd_micros_per_mtok: int = 0
    completion_usd_micros_per_mtok: int = 0
    cost: Decimal = Decimal(0)
    cost_usd_micros: int = 0


class MonthlyReport(_Out):
    """``GET /billing/report?month=2026-03``: replayed from the user's events, per job and price."""

    month: str = ""
    start_date: str = ""
    rows: list[ReportRow] = msgspec.field(default_factory=list)
    total_cost: Decimal = Decimal(0)
    total_cost_usd_micros: int = 0
    charged_usd_micros: int | UnsetType = UNSET
    credited_usd_micros: int | UnsetType = UNSET
    serving: list[ServingReportRow] | UnsetType = UNSET
    """Chat completions in the month, per model and price (their cost is in the total)."""


class BudgetRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Set the monthly budget (``null`` removes it) and the alert thresholds in percent."""

    monthly_limit_usd_micros: Annotated[int, msgspec.Meta(ge=1, le=10**15)] | None
    thresholds_pct: Annotated[
        list[Percent],
        # for the OpenAPI document: the item bounds again (Litestar reads only the list's own Meta)
        # and what the budget checks, no value twice
        msgspec.Meta(max_length=10, extra_json_schema={"extra": _PERCENTS_SCHEMA}),
    ] = msgspec.field(default_factory=lambda: [50, 80, 100])
