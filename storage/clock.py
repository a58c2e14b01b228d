"""The system clock: the one place ``now`` is read (the domain is handed times; tests pass a fixed clock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]
"""Where a component gets ``now`` from (``utc_now`` unless a test hands it another)."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
