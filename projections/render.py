"""Deterministic bytes for views: one encoder, exact money, exact seconds, UTC times.

Every view is a msgspec Struct (fields in a fixed order) encoded by ``encode``;
dict keys are sorted, so the same state always gives the same bytes. Money is
integer micro-dollars in the state; a view shows it twice, as an exact decimal
JSON number of dollars (``domain.money.dollars``: ``156.78``, ``0.000123``, never
through a float) and as the integer ``*_usd_micros`` beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

__all__ = ["decode", "encode", "event_name", "event_names", "iso", "month_start", "seconds"]

_ENCODER = msgspec.json.Encoder(decimal_format="number", order="deterministic")
_ONE = Decimal(1)


def encode(view: Any) -> bytes:
    """The canonical bytes of a view (compact JSON, sorted dict keys, exact decimals)."""
    return _ENCODER.encode(view)


def decode(data: bytes) -> Any:
    """Plain JSON decoding of a stored view (numbers with a fraction become floats)."""
    return msgspec.json.decode(data)


def seconds(ms: int) -> Decimal:
    """Exact seconds from milliseconds: 3600, 1.5, 0.001."""
    value = Decimal(ms).scaleb(-3).normalize()
    return value.quantize(_ONE) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


def iso(at: datetime | None) -> str | None:
    """``2024-03-14T10:30:00Z`` (UTC, microseconds only when present); naive times are taken as UTC."""
    if at is None:
        return None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat() + "Z"


def month_start(period: str) -> str:
    """``2024-03`` -> ``2024-03-01`` (the seed's ``start_date``)."""
    return f"{period}-01"


def event_name(event: object) -> str:
    """``Job.Submitted``: the event class's qualified name, how projections choose their folds."""
    return type(event).__qualname__


def event_names(*classes: type) -> frozenset[str]:
    """The ``event_name`` of each of these event classes: what a projection chooses its folds by."""
    return frozenset(cls.__qualname__ for cls in classes)
