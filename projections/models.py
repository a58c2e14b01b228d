"""Models: ``models/<model_id>/metadata.json`` per model and the ``metadata/models.json`` listing.

A deleted model keeps its metadata.json as a tombstone (``status: deleted``)
and leaves the listing; whoever removes its weights must leave metadata.json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from msgspec.structs import replace

from domain.model import Model
from projections.listing import copied, opened, ordered_rows, started_by
from projections.render import event_name, event_names
from views.rows import ModelRow

__all__ = [
    "EVENTS",
    "ModelRow",
    "ModelState",
    "ModelView",
    "ModelsView",
    "fold",
    "item_view",
    "listed",
    "listing_view",
    "row",
]

EVENTS = event_names(Model.Registered, Model.StopGateChecked, Model.Deleted)


class ModelState(started_by(Model.Registered), frozen=True):  # type: ignore[misc]
    """What ``Model.Registered`` records, then what the views add."""

    created_at: datetime
    updated_at: datetime
    status: str = "ready"
    deleted_at: datetime | None = None
    stop_gate: dict[str, Any] | None = None


def fold(model: ModelState | None, event: Any) -> ModelState:
    """The model after one of its events (pure)."""
    if model is None:
        return opened(ModelState, event, "Model.Registered")
    at: datetime = event.at
    if event_name(event) == "Model.Deleted":
        return replace(model, status="deleted", deleted_at=at, updated_at=at)
    if event_name(event) == "Model.StopGateChecked":
        gate = {k: getattr(event, k) for k in ("stops", "new_tokens", "max_new_tokens", "sample")}
        return replace(model, stop_gate=gate, updated_at=at)
    return replace(model, updated_at=at)


class ModelView(msgspec.Struct):
    """``models/<model_id>/metadata.json``."""

    position: int
    model_id: str
    status: str
    job_id: str
    base_model: str
    kind: str
    weights_prefix: str
    sha256: str | None
    size_bytes: int | None
    metrics: dict[str, Any] | None
    created_at: str | None
    updated_at: str | None
    deleted_at: str | None
    stop_gate: dict[str, Any] | UnsetType = UNSET
    """The stop gate's verdict (``stops: false``: the model never ended its answer); written only for
    a model checked (the views of older histories are unchanged)."""


def item_view(model: ModelState, position: int) -> ModelView:
    gate = UNSET if model.stop_gate is None else model.stop_gate
    return copied(ModelView, model, position=position, stop_gate=gate)


class ModelsView(msgspec.Struct):
    """``metadata/models.json``: models not deleted, oldest first."""

    position: int
    models: list[ModelRow]


def row(model: ModelState) -> ModelRow | None:
    """The listing row, or None once deleted."""
    return None if model.status == "deleted" else copied(ModelRow, model)


def listed(model: ModelState) -> tuple[Any, ...] | None:
    """What the listing row is made of, uncooked (None once deleted)."""
    return None if model.status == "deleted" else (model.status,)


def listing_view(models: list[ModelState], position: int) -> ModelsView:
    return ModelsView(position, ordered_rows(models, "model_id", row))
