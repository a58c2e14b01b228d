"""Base-model catalogue (platform partition): ``platform/metadata/base_models.json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain.catalogue import BaseModelCatalogue
from projections.render import event_name, event_names, iso

__all__ = ["EVENTS", "BaseModel", "CatalogueView", "fold", "view"]

EVENTS = event_names(BaseModelCatalogue.BaseModelAdded, BaseModelCatalogue.BaseModelRemoved)


class BaseModel(msgspec.Struct, frozen=True):
    name: str
    source_kind: str
    source: str
    chat_template: bool
    added_at: str | None


class CatalogueView(msgspec.Struct):
    """``platform/metadata/base_models.json``: base models by name."""

    position: int
    base_models: list[BaseModel]


def fold(state: dict[str, BaseModel], event: Any) -> dict[str, BaseModel]:
    """The catalogue after one event (pure: returns a new dict)."""
    kind = event_name(event)
    if kind == "BaseModelCatalogue.BaseModelAdded":
        at: datetime = event.at
        entry = BaseModel(event.name, event.source_kind, event.source, bool(event.chat_template), iso(at))
        return {**state, event.name: entry}
    if kind == "BaseModelCatalogue.BaseModelRemoved":
        return {k: v for k, v in state.items() if k != event.name}
    return state


def view(state: dict[str, BaseModel], position: int) -> CatalogueView:
    return CatalogueView(position, [state[k] for k in sorted(state)])
