"""Models: ``models/<model_id>/metadata.json`` per model and the ``metadata/models.json`` listing.

A deleted model keeps its metadata.json as a tombstone (``status: deleted``)
and leaves the listing; whoever removes its weights must leave metadata.json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from domain.model import Model
from projections.render import event_name, iso

__all__ = [
    "EVENTS",
    "ModelRow",
    "ModelState",
    "ModelView",
    "ModelsView",
    "fold",
    "item_name",
    "item_view",
    "listed",
    "listing_name",
    "listing_view",
    "row",
]

EVENTS = frozenset(cls.__qualname__ for cls in (Model.Registered, Model.Deleted))


class ModelState(msgspec.Struct, frozen=True):
    model_id: str
    user_id: str
    job_id: str
    base_model: str
    kind: str
    weights_prefix: str
    sha256: str | None
    size_bytes: int | None
    metrics: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    status: str = "ready"
    deleted_at: datetime | None = None


def fold(model: ModelState | None, event: Any) -> ModelState:
    """The model after one of its events (pure)."""
    name = event_name(event)
    at: datetime = event.at
    if model is None:
        if name != "Model.Registered":
            raise ValueError(f"{name} before Model.Registered for aggregate {event.originator_id}")
        return ModelState(
            model_id=event.model_id,
            user_id=event.user_id,
            job_id=event.job_id,
            base_model=event.base_model,
            kind=event.kind,
            weights_prefix=event.weights_prefix,
            sha256=event.sha256,
            size_bytes=event.size_bytes,
            metrics=event.metrics,
            created_at=at,
            updated_at=at,
        )
    if name == "Model.Deleted":
        return replace(model, status="deleted", deleted_at=at, updated_at=at)
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


def item_view(model: ModelState, position: int) -> ModelView:
    return ModelView(
        position=position,
        model_id=model.model_id,
        status=model.status,
        job_id=model.job_id,
        base_model=model.base_model,
        kind=model.kind,
        weights_prefix=model.weights_prefix,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        metrics=model.metrics,
        created_at=iso(model.created_at),
        updated_at=iso(model.updated_at),
        deleted_at=iso(model.deleted_at),
    )


class ModelRow(msgspec.Struct, frozen=True):
    model_id: str
    job_id: str
    base_model: str
    kind: str
    status: str
    size_bytes: int | None
    created_at: str | None


class ModelsView(msgspec.Struct):
    """``metadata/models.json``: models not deleted, oldest first."""

    position: int
    models: list[ModelRow]


def row(model: ModelState) -> ModelRow | None:
    """The listing row, or None once deleted."""
    if model.status == "deleted":
        return None
    return ModelRow(
        model_id=model.model_id,
        job_id=model.job_id,
        base_model=model.base_model,
        kind=model.kind,
        status=model.status,
        size_bytes=model.size_bytes,
        created_at=iso(model.created_at),
    )


def listed(model: ModelState) -> tuple[Any, ...] | None:
    """What the listing row is made of, uncooked (None once deleted)."""
    return None if model.status == "deleted" else (model.status,)


def item_name(root: str, model: ModelState) -> str:
    return f"{root}/models/{model.model_id}/metadata.json"


def listing_name(root: str) -> str:
    return f"{root}/metadata/models.json"


def listing_view(models: list[ModelState], position: int) -> ModelsView:
    ordered = sorted(models, key=lambda m: (m.created_at, m.model_id))
    return ModelsView(position, [r for r in map(row, ordered) if r is not None])
