"""What the OpenAPI document says beyond what Litestar infers from the handlers.

The JWT auth adds its bearer requirement to the whole document; the routes it
excludes (login, health) say so with ``PublicOperation`` (``security: []``), so a
client or a fuzzer does not send a token there and does not expect a 401.
A bound of 0 (``msgspec.Meta(ge=0)``) is put back (``restore_zero_bounds``): Litestar drops
falsy bounds, so ``temperature >= 0`` read as unbounded below. A request shape that refuses
unknown fields (``forbid_unknown_fields``) says
``additionalProperties: false`` (``close_strict_shapes``); Litestar leaves it open.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import msgspec
import msgspec.inspect
from litestar.openapi.spec import OpenAPI, Operation

__all__ = ["PublicOperation", "close_strict_shapes", "restore_zero_bounds"]


@dataclass
class PublicOperation(Operation):
    """An operation that needs no token: an empty ``security`` overrides the document's requirement."""

    def __post_init__(self) -> None:
        self.security = []


def close_strict_shapes(document: OpenAPI, shapes: ModuleType) -> None:
    """``additionalProperties: false`` on each component named after a Struct in ``shapes`` that
    refuses unknown fields."""
    for name, schema in (document.components.schemas or {}).items():
        shape = getattr(shapes, name, None)
        strict = isinstance(shape, type) and issubclass(shape, msgspec.Struct)
        if strict and shape.__struct_config__.forbid_unknown_fields:  # type: ignore[union-attr]
            schema.additional_properties = False


def _bounds(info: msgspec.inspect.Type) -> dict[str, float]:
    """The zero bounds of a numeric field type (inside an optional union too)."""
    kinds = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    found: dict[str, float] = {}
    for kind in kinds:
        if isinstance(kind, msgspec.inspect.FloatType | msgspec.inspect.IntType):
            if kind.ge == 0:
                found["minimum"] = 0
            if kind.le == 0:
                found["maximum"] = 0
    return found


def restore_zero_bounds(document: OpenAPI, shapes: ModuleType) -> None:
    """``minimum: 0`` (and ``maximum: 0``) on each field of a Struct in ``shapes`` bounded so."""
    for name, schema in (document.components.schemas or {}).items():
        shape = getattr(shapes, name, None)
        if not (isinstance(shape, type) and issubclass(shape, msgspec.Struct)):
            continue
        info = msgspec.inspect.type_info(shape)
        for field in info.fields:  # type: ignore[attr-defined]
            prop = (schema.properties or {}).get(field.encode_name)
            for key, value in _bounds(field.type).items():
                if prop is not None and getattr(prop, key, None) is None:
                    setattr(prop, key, value)
