"""The price list (platform singleton): the price of one GPU for one hour, per GPU type, over time.

A price change applies from its ``effective_at`` only: ``price_at(gpu_type, t)`` is the latest
entry whose ``effective_at <= t``. A price takes effect now or later, never in the past: a
change with ``effective_at`` before the command's ``at`` is refused, since usage already metered
keeps the price it was metered at (``Job.UsageMetered.usd_micros_per_hour``) and a back-dated
price would contradict the bills. Entries of a GPU type are appended in time order (a change
effective before or at the latest one is refused), so history is never rewritten. Both are
rules on new commands: stored ``PriceSet`` events are applied as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count, check_utc
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.gpu_types import GPU_TYPES
from domain.ids import check_id

__all__ = [
    "DEFAULT_PRICES_USD_MICROS_PER_HOUR",
    "GPU_TYPE_PATTERN",
    "PriceList",
    "PriceListFields",
    "check_gpu_type",
]

GPU_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
"""Same shape as ``TrainingConfig.gpu_type``: lower-case letters, digits, ``-``, ``_``."""

DEFAULT_PRICES_USD_MICROS_PER_HOUR: dict[str, int] = {
    name: gpu.usd_micros_per_hour for name, gpu in GPU_TYPES.items()
}
"""What a new platform's price list starts with (``domain.gpu_types``: add a type there)."""


def check_gpu_type(gpu_type: str) -> None:
    check_id(gpu_type, kind="gpu_type")
    if len(gpu_type) > 40 or gpu_type != gpu_type.lower():
        raise ValidationFailed(
            "gpu_type must be at most 40 lower-case letters, digits, '-' or '_'", where="gpu_type"
        )


class PriceListFields:
    """What a ``PriceList`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    prices: dict[str, list[dict[str, Any]]]
    updated_at: datetime


class PriceList(DomainAggregate, PriceListFields):
    """The one price list (a singleton).

    ``prices[gpu_type]`` is a list of ``{"effective_at": datetime, "usd_micros_per_hour": int}``
    in time order.
    """

    ID_KIND, ID_KEY = "price_list", ""

    class Created(Aggregate.Created):
        at: datetime

        def apply(self, price_list: PriceList) -> None:
            price_list.prices, price_list.updated_at = {}, self.at

    class PriceSet(Aggregate.Event):
        gpu_type: str
        usd_micros_per_hour: int
        effective_at: datetime
        at: datetime

        def apply(self, price_list: PriceList) -> None:
            entry = {"effective_at": self.effective_at, "usd_micros_per_hour": self.usd_micros_per_hour}
            price_list.prices.setdefault(self.gpu_type, []).append(entry)
            price_list.updated_at = self.at

    @classmethod
    def create(cls, at: datetime) -> PriceList:
        return cls._create_at(cls.Created, at)

    def set_price(
        self, gpu_type: str, usd_micros_per_hour: int, effective_at: datetime, at: datetime
    ) -> None:
        """From ``effective_at`` on, one ``gpu_type`` GPU costs ``usd_micros_per_hour`` per hour.

        ``effective_at`` is ``at`` (now) or later; a time in the past is refused.
        """
        check_gpu_type(gpu_type)
        check_count(usd_micros_per_hour, where="usd_micros_per_hour", maximum=1_000_000_000)
        effective_at = check_utc(effective_at, where="effective_at")
        now = check_utc(at)
        if effective_at < now:
            raise ValidationFailed(
                f"effective_at {effective_at.isoformat()} is in the past (now {now.isoformat()}); "
                "a price takes effect now or later",
                where="effective_at",
            )
        history = self.prices.get(gpu_type, [])
        if history and effective_at <= history[-1]["effective_at"]:
            latest = history[-1]["effective_at"].isoformat()
            raise Conflict(
                f"a {gpu_type} price is already set effective {latest}; a change must take effect later",
                where="effective_at",
            )
        self._record(
            self.PriceSet,
            at,
            gpu_type=gpu_type,
            usd_micros_per_hour=usd_micros_per_hour,
            effective_at=effective_at,
        )

    def price_at(self, gpu_type: str, t: datetime) -> int:
        """The price in force for ``gpu_type`` at ``t``; NotFound if none was in force yet."""
        t = check_utc(t, where="t")
        in_force = [e for e in self.prices.get(gpu_type, []) if e["effective_at"] <= t]
        if not in_force:
            known = ", ".join(sorted(self.prices)) or "none"
            raise NotFound(
                f"no price for GPU type {gpu_type!r} at {t.isoformat()} (priced: {known})", where="gpu_type"
            )
        return int(in_force[-1]["usd_micros_per_hour"])

    def entries(self) -> list[tuple[str, datetime, int]]:
        """Every price ever set: ``(gpu_type, effective_at, usd_micros_per_hour)``, by type then time."""
        return [
            (gpu_type, e["effective_at"].astimezone(UTC), int(e["usd_micros_per_hour"]))
            for gpu_type in sorted(self.prices)
            for e in self.prices[gpu_type]
        ]
