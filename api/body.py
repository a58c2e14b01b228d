"""JSON request bodies decoded strictly, as the OpenAPI schema says: ``StrictRequest``, every route's request.

Litestar decodes a JSON body into plain values, then converts them to the handler's ``data``
type with msgspec's ``strict=False`` (needed for path and query strings), which also lets
``"100"`` through as an integer and ``"true"`` as a boolean. Here the body is decoded straight
into the ``data`` type in strict mode; the signature model then finds the value already built
and keeps it as it is.

Before decoding, the body's nesting is checked (``domain.json_depth``): msgspec recurses once per
level, and a body nested 1,000 deep would otherwise end in ``RecursionError`` (a 500).

A number with a zero fractional part (``22.0``) is an integer, as JSON Schema says (and as
schema-driven clients such as schemathesis send it); ``22.5`` where an integer is expected is not.

Every refusal is a ``ValidationFailed`` (400 ``invalid``) whose ``where`` names the field
(``thresholds_pct[0]``, ``config``), or ``body`` for the body as a whole.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request

from domain.errors import ValidationFailed
from domain.json_depth import MAX_JSON_DEPTH, json_too_deep

__all__ = ["StrictRequest", "decode_body"]

_AT = re.compile(r" - at `\$(?P<path>.*)`$")
_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<field>.*)`")


def decode_body(body: bytes, target: Any) -> Any:
    """``body`` decoded as JSON into ``target`` in strict mode; ValidationFailed naming the field."""
    if json_too_deep(body):
        raise ValidationFailed(
            f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
            where="body",
        )
    try:
        try:
            return msgspec.json.decode(body, type=target, strict=True)
        except msgspec.ValidationError as exc:
            if not re.match(r"Expected `int[^`]*`, got `float`", str(exc)):
                raise
            return msgspec.convert(_integral_floats_as_ints(msgspec.json.decode(body)), target, strict=True)
    except msgspec.ValidationError as exc:
        message, where = _located(str(exc))
        raise ValidationFailed(message, where=where) from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"the body is not valid JSON: {exc}", where="body") from None


def _integral_floats_as_ints(value: Any) -> Any:
    """``22.0`` -> ``22`` throughout (a float field takes an int as it is; ``22.5`` stays a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


def _located(error: str) -> tuple[str, str]:
    """msgspec's ``Expected `int`, got `str` - at `$.a[0]``` as (message, ``a[0]``)."""
    at = _AT.search(error)
    message = error[: at.start()] if at else error
    path = at.group("path").lstrip(".") if at else ""
    field = _FIELD.match(message)
    if field:
        path = f"{path}.{field.group('field')}" if path else field.group("field")
    return message, path or "body"


class StrictRequest(Request[Any, Any, Any]):
    """A request whose JSON body is decoded strictly into the route's ``data`` type (``decode_body``)."""

    async def json(self) -> Any:
        field = self.route_handler.parsed_data_field
        return decode_body(await self.body(), field.raw if field is not None else Any)
