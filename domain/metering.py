"""Pure rules the ledger needs that no aggregate holds: prices over a window, the next interval, retries.

- ``PriceSchedule``: the price in force at any time from a ``PriceListView`` (the prices in
  force at ``view.at`` plus every change scheduled after it), by the same rule as
  ``PriceList.price_at``: the latest entry whose ``effective_at <= t``. One view answers a
  whole batch of heartbeats without loading the price list once per heartbeat.
- ``marginal_cost_usd_micros``: what ``extra_ms`` more in one usage group adds to a job's
  cost, exactly (the money rule prices the group's summed milliseconds, so this is the
  difference of two group costs, never a per-interval rounding).
- ``job_policy``: a job's heartbeat interval and retry budget, from its training config.
- ``may_retry``: attempts run while ``attempt <= max_retries`` (so ``1 + max_retries`` in all).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from domain.base import check_utc
from domain.errors import NotFound, ValidationFailed
from domain.money import UsageGroupKey, cost_usd_micros
from domain.read_models import PriceListView
from domain.training_config import TrainingConfig, parse_training_config

__all__ = ["JobPolicy", "PriceSchedule", "job_policy", "marginal_cost_usd_micros", "may_retry"]


class PriceSchedule:
    """Prices from ``view.at`` on: ``price_at(gpu_type, t)`` for any ``t >= view.at``."""

    def __init__(self, view: PriceListView) -> None:
        self.start = check_utc(view.at)
        entries: dict[str, list[tuple[datetime, int]]] = {}
        for price in [*view.prices, *view.scheduled]:
            entry = (check_utc(price.effective_at), price.usd_micros_per_hour)
            entries.setdefault(price.gpu_type, []).append(entry)
        self._entries = {gpu_type: sorted(rows) for gpu_type, rows in entries.items()}

    def price_at(self, gpu_type: str, t: datetime) -> int:
        """Micro-dollars per GPU-hour in force at ``t``; NotFound if none was; ValueError before ``start``."""
        t = check_utc(t, where="t")
        if t < self.start:
            raise ValueError(f"{t.isoformat()} is before this schedule's start {self.start.isoformat()}")
        price = None
        for effective_at, usd_micros_per_hour in self._entries.get(gpu_type, ()):
            if effective_at > t:
                break
            price = usd_micros_per_hour
        if price is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise NotFound(
                f"no price for GPU type {gpu_type!r} at {t.isoformat()} (priced: {known})", where="gpu_type"
            )
        return price


def marginal_cost_usd_micros(usage: Mapping[str, int], key: UsageGroupKey, extra_ms: int) -> int:
    """How much a job's cost grows when ``extra_ms`` are added to group ``key`` of its ``usage``.

    ``usage`` maps encoded group keys to summed milliseconds (``Job.usage``).
    """
    if extra_ms < 0:
        raise ValidationFailed(f"extra_ms must not be negative (got {extra_ms})", where="extra_ms")
    ms = usage.get(key.encode(), 0)
    return cost_usd_micros(ms + extra_ms, key.gpu_count, key.usd_micros_per_hour) - cost_usd_micros(
        ms, key.gpu_count, key.usd_micros_per_hour
    )


class JobPolicy(NamedTuple):
    heartbeat_interval_ms: int
    max_retries: int


def job_policy(config: Mapping[str, Any] | None) -> JobPolicy:
    """The heartbeat interval and retry budget a job was submitted with (defaults if unreadable)."""
    try:
        parsed = parse_training_config(config)
    except ValidationFailed:  # a config stored before a schema change: the defaults still bound it
        parsed = TrainingConfig()
    return JobPolicy(round(parsed.heartbeat_interval_seconds * 1000), parsed.max_retries)


def may_retry(attempt: int, max_retries: int) -> bool:
    """Whether ``attempt`` may be followed by another: attempts run while ``attempt <= max_retries``."""
    return attempt <= max_retries
