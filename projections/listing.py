"""What the per-entity projections (jobs, datasets, models, users) share.

Each folds one aggregate's events into a state Struct, renders an item view and a
listing row from it, and lists its entities oldest first. A state starts as what the
entity's first (stored) event records (``started_by``); the views copy most of their
fields from the state by name. These helpers do that copying once, so a module names
only the fields it adds or computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cache
from typing import Any, TypeVar, get_type_hints

import msgspec
from eventsourcing.domain import Aggregate

from projections.render import event_name, iso

__all__ = ["copied", "opened", "ordered_rows", "started_by"]

V = TypeVar("V", bound=msgspec.Struct)
R = TypeVar("R")


def started_by(event_class: type, *, leave_out: tuple[str, ...] = ()) -> type[msgspec.Struct]:
    """A frozen Struct of the fields ``event_class`` (an entity's first event) declares, in order, less
    ``at`` and ``leave_out``: the base of the entity's state, which ``opened`` fills from the event."""
    envelope = {f.name for f in dataclasses.fields(Aggregate.Created)}  # originator_id, timestamp ...
    hints = get_type_hints(event_class)
    declared = [
        (f.name, hints[f.name])
        for f in dataclasses.fields(event_class)  # type: ignore[arg-type]
        if f.name not in envelope and f.name != "at" and f.name not in leave_out
    ]
    name = event_class.__qualname__.replace(".", "")  # Model.Registered -> ModelRegistered
    return msgspec.defstruct(name, declared, frozen=True, module=__name__)


def opened(
    cls: type[V], event: Any, first: str, *, at_fields: tuple[str, ...] = ("created_at", "updated_at")
) -> V:
    """The state the entity's ``first`` event makes: each required field of ``cls`` is the event's
    same-named attribute, those in ``at_fields`` the event's ``at``.

    Raises:
        ValueError: ``event`` is not a ``first`` event (the log starts mid-history).
    """
    name = event_name(event)
    if name != first:
        raise ValueError(f"{name} before {first} for aggregate {event.originator_id}")
    return cls(**{name: event.at if name in at_fields else getattr(event, name) for name in _required(cls)})


@cache
def _required(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The names of ``cls``'s required fields (``structs.fields`` resolves the annotations: slow)."""
    return tuple(field.name for field in msgspec.structs.fields(cls) if field.required)


def copied(cls: type[V], state: object, **given: Any) -> V:
    """A ``cls`` view: the fields in ``given``, the others ``state``'s same-named attributes;
    datetimes are rendered by ``render.iso`` (a view holds times as strings)."""
    values = {name: given[name] if name in given else getattr(state, name) for name in cls.__struct_fields__}
    return cls(**{name: iso(v) if isinstance(v, datetime) else v for name, v in values.items()})


def ordered_rows(states: Iterable[Any], id_field: str, row: Callable[[Any], R | None]) -> list[R]:
    """The listing rows of ``states``, oldest first (``created_at``, then ``id_field``), leaving out
    the entities ``row`` gives None for (a deleted dataset or model)."""
    ordered = sorted(states, key=lambda s: (s.created_at, getattr(s, id_field)))
    return [r for r in map(row, ordered) if r is not None]
