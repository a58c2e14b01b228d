"""The rows of the listings and the items nested in the views: one declaration each.

The projections write them into the stored JSON views (``jobs.json``, ``status.json``,
``datasets.json``, ``models.json``, ``billing.json``, ``gpu_pricing.json`` ...) and the API serves
them as they are (``api.schemas`` re-exports them), so their fields, in order, are a stored format
as well as a reply: never add, drop or reorder one. The top-level views keep their own Structs
(in ``projections``, a stored view puts ``position`` first; in ``api.schemas``, a reply puts it
last); ``tests/property/test_views_as_served.py`` checks that every view the projections write
decodes strictly into the schema the API serves it with.

This package sits at the bottom of the stack beside ``domain``: it imports only msgspec and the
standard library, so ``projections`` (which writes these shapes) and the CLI (which reads them
through ``api.schemas``) can both import it without an upward arrow.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = [
    "BudgetView",
    "Checkpoint",
    "Credit",
    "DatasetRow",
    "GpuMetrics",
    "GpuPrice",
    "GpuUsage",
    "JobRow",
    "LineError",
    "ModelRow",
    "Rate",
    "Retry",
    "ScheduledPrice",
    "ServedModel",
    "ServingPrice",
    "StartPoint",
    "ViewItem",
]


class ViewItem(msgspec.Struct, kw_only=True):
    """Base of the shared shapes: every field has a default so a newer view still decodes."""


class Checkpoint(ViewItem):
    attempt: int = 0
    step: int = 0
    path: str = ""
    at: str | None = None


class StartPoint(ViewItem):
    """Where a job's training started: a checkpoint (``id`` ``<job_id>:<step>``) or a model (``id`` its
    model id), ``path`` its folder in the bucket."""

    kind: str = ""
    id: str = ""
    path: str = ""


class Credit(ViewItem):
    """GPU time of one attempt credited for one reason: a platform fault (``lost``, ``control_plane``,
    ``preempted``, ``superseded``, ``shutdown``) or ``limit`` (past ``max_cost`` or the monthly
    budget); the credits of an attempt and reason summed, ``at`` the latest."""

    attempt: int = 0
    reason: str = ""
    gpu_ms: int = 0
    at: str | None = None


class Retry(ViewItem):
    attempt: int = 0
    reason: str = ""
    at: str | None = None


class GpuMetrics(ViewItem):
    gpu_type: str = ""
    gpu_count: int = 1
    current_duration_seconds: Decimal = Decimal(0)
    gpu_ms: int = 0


class JobRow(ViewItem):
    job_id: str = ""
    model_id: str | None = None
    dataset_id: str = ""
    status: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    base_model: str = ""
    gpu_type: str = ""
    gpu_count: int = 1


class LineError(ViewItem):
    """A problem in an upload; ``line`` is 1-based, 0 for the file as a whole."""

    line: int | None = None
    message: str = ""


class DatasetRow(ViewItem):
    dataset_id: str = ""
    filename: str = ""
    status: str = ""
    format: str | None = None
    rows: int | None = None
    size_bytes: int = 0
    created_at: str | None = None
    updated_at: str | None = None


class ModelRow(ViewItem):
    model_id: str = ""
    job_id: str | None = None
    base_model: str = ""
    kind: str = ""
    status: str = ""
    size_bytes: int | None = None
    created_at: str | None = None


class Rate(ViewItem):
    cost_per_hour: Decimal = Decimal(0)
    usd_micros_per_hour: int = 0
    seconds: Decimal = Decimal(0)
    gpu_ms: int = 0
    total_cost: Decimal = Decimal(0)
    total_cost_usd_micros: int = 0


class GpuUsage(ViewItem):
    """One GPU type in a period; ``seconds`` are GPU-seconds (time x GPU count)."""

    seconds: Decimal = Decimal(0)
    cost_per_hour: Decimal = Decimal(0)
    total_cost: Decimal = Decimal(0)
    gpu_ms: int = 0
    cost_per_hour_usd_micros: int = 0
    total_cost_usd_micros: int = 0
    rates: list[Rate] = msgspec.field(default_factory=list)


class BudgetView(ViewItem):
    """The monthly budget; a null limit means none (alerts and stops are off)."""

    monthly_limit: Decimal | None = None
    monthly_limit_usd_micros: int | None = None
    thresholds_pct: list[int] = msgspec.field(default_factory=list)
    set_at: str | None = None


class ScheduledPrice(ViewItem):
    effective_at: str | None = None
    cost_per_hour: Decimal = Decimal(0)
    usd_micros_per_hour: int = 0


class GpuPrice(ViewItem):
    cost_per_hour: Decimal = Decimal(0)
    usd_micros_per_hour: int = 0
    effective_at: str | None = None
    schedule: list[ScheduledPrice] = msgspec.field(default_factory=list)


class ServedModel(ViewItem):
    """Chat completions of one model at one price in a month: summed tokens and engine time, and
    their ``cost`` (priced once from the summed tokens, per million)."""

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


class ServingPrice(ViewItem):
    """A base model's serving price per million tokens (``"*"``: any base model without its own)."""

    prompt_per_mtok: Decimal = Decimal(0)
    completion_per_mtok: Decimal = Decimal(0)
    prompt_usd_micros_per_mtok: int = 0
    completion_usd_micros_per_mtok: int = 0
    effective_at: str | None = None
