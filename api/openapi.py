"""What the OpenAPI document says beyond what Litestar infers from the handlers.

The JWT auth adds its bearer requirement to the whole document; the routes it
excludes (login, health) say so with ``PublicOperation`` (``security: []``), so a
client or a fuzzer does not send a token there and does not expect a 401.
A request shape that refuses unknown fields (``forbid_unknown_fields``) says
``additionalProperties: false`` (``close_strict_shapes``); Litestar leaves it open.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import msgspec
from litestar.openapi.spec import OpenAPI, Operation

__all__ = ["PublicOperation", "close_strict_shapes"]


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
