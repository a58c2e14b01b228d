"""The price list (platform singleton): the price of one GPU for one hour, per GPU type, over time.

A price change applies from its ``effective_at`` only: ``price_at(gpu_type, t)`` is the latest
entry whose ``effective_at <= t``. A price takes effect now or later, never in the past: a
change with ``effective_at`` before the command's ``at`` is refused, since usage already metered
keeps the price it was metered at (``Job.UsageMetered.usd_micros_per_hour``) and a back-dated
price would contradict the bills. Entries of a GPU type are appended in time order (a change
effective before or at the latest one is refused), so history is never rewritten. Both are
rules on new commands: stored ``PriceSet`` events are applied as they are.

Serving (chat completions) has its own prices on the same list, per base model per million tokens,
prompt and completion apart (``ServingPriceSet``), by the same rules: from now or later, appended in
time order. ``serving_price_at(base_model, t)`` falls back to the ``"*"`` entry (any other base
model: one an operator added) when the base model has no price of its own in force.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count, check_utc
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.gpu_types import GPU_TYPES
from domain.ids import check_id

__all__ = [
    "ANY_BASE_MODEL",
    "DEFAULT_PRICES_USD_MICROS_PER_HOUR",
    "DEFAULT_SERVING_PRICES",
    "GPU_TYPE_PATTERN",
    "PriceList",
    "PriceListFields",
    "ServingPrice",
    "check_gpu_type",
    "check_serving_model",
    "serving_price_in",
]

GPU_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
"""Same shape as ``TrainingConfig.gpu_type``: lower-case letters, digits, ``-``, ``_``."""

DEFAULT_PRICES_USD_MICROS_PER_HOUR: dict[str, int] = {
    name: gpu.usd_micros_per_hour for name, gpu in GPU_TYPES.items()
}
"""What a new platform's price list starts with (``domain.gpu_types``: add a type there)."""


ANY_BASE_MODEL = "*"
"""The serving price of a base model without a price of its own."""

DEFAULT_SERVING_PRICES: dict[str, tuple[int, int]] = {
    # base model: (prompt, completion) micro-dollars per million tokens
    ANY_BASE_MODEL: (200_000, 400_000),
    "tiny-llama": (10_000, 20_000),
    "smollm2-135m": (20_000, 40_000),
    "smollm2-135m-hub": (20_000, 40_000),
    "qwen2_5-0_5b": (50_000, 100_000),
    "llama3_2-1b": (60_000, 120_000),
    "llama3_2-3b": (100_000, 200_000),
    "llama3-8b": (200_000, 400_000),
    "llama3_1-8b": (200_000, 400_000),
    "mistral-7b": (200_000, 400_000),
    "qwen2_5-7b": (200_000, 400_000),
}
"""What a new platform's serving prices start with: one per catalogue base model, and ``"*"``."""


class ServingPrice(NamedTuple):
    """Micro-dollars per million tokens, prompt and completion."""

    prompt_usd_micros_per_mtok: int
    completion_usd_micros_per_mtok: int


def check_serving_model(base_model: str) -> None:
    """A base model's name (as the catalogue spells it) or ``"*"``."""
    if base_model != ANY_BASE_MODEL:
        check_id(base_model, kind="base_model")


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
    serving_prices: dict[str, list[dict[str, Any]]]
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
            price_list.serving_prices = {}

    class PriceSet(Aggregate.Event):
        gpu_type: str
        usd_micros_per_hour: int
        effective_at: datetime
        at: datetime

        def apply(self, price_list: PriceList) -> None:
            entry = {"effective_at": self.effective_at, "usd_micros_per_hour": self.usd_micros_per_hour}
            price_list.prices.setdefault(self.gpu_type, []).append(entry)
            price_list.updated_at = self.at

    class ServingPriceSet(Aggregate.Event):
        base_model: str
        prompt_usd_micros_per_mtok: int
        completion_usd_micros_per_mtok: int
        effective_at: datetime
        at: datetime

        def apply(self, price_list: PriceList) -> None:
            entry = {
                "effective_at": self.effective_at,
                "prompt_usd_micros_per_mtok": self.prompt_usd_micros_per_mtok,
                "completion_usd_micros_per_mtok": self.completion_usd_micros_per_mtok,
            }
            price_list.serving_prices.setdefault(self.base_model, []).append(entry)
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
        effective_at = _check_effective(effective_at, at)
        _check_later(self.prices.get(gpu_type, []), gpu_type, effective_at)
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

    def set_serving_price(
        self, base_model: str, price: ServingPrice, effective_at: datetime, at: datetime
    ) -> None:
        """From ``effective_at`` on, chat completions on ``base_model`` (``"*"``: any without a price
        of its own) cost ``price`` per million prompt and completion tokens."""
        check_serving_model(base_model)
        for name, value in zip(ServingPrice._fields, price, strict=True):
            check_count(value, where=name, maximum=1_000_000_000)
        effective_at = _check_effective(effective_at, at)
        _check_later(self.serving_prices.get(base_model, []), f"{base_model} serving", effective_at)
        self._record(
            self.ServingPriceSet,
            at,
            base_model=base_model,
            prompt_usd_micros_per_mtok=price.prompt_usd_micros_per_mtok,
            completion_usd_micros_per_mtok=price.completion_usd_micros_per_mtok,
            effective_at=effective_at,
        )

    def serving_price_at(self, base_model: str, t: datetime) -> ServingPrice:
        """The serving price in force for ``base_model`` at ``t`` (else ``"*"``'s); NotFound if none."""
        return serving_price_in(self.serving_entries(), base_model, t)

    def serving_entries(self) -> list[tuple[str, datetime, ServingPrice]]:
        """Every serving price ever set: ``(base_model, effective_at, price)``, by model then time."""
        return [
            (
                name,
                e["effective_at"].astimezone(UTC),
                ServingPrice(int(e["prompt_usd_micros_per_mtok"]), int(e["completion_usd_micros_per_mtok"])),
            )
            for name in sorted(self.serving_prices)
            for e in self.serving_prices[name]
        ]


def serving_price_in(
    entries: Iterable[tuple[str, datetime, ServingPrice]], base_model: str, t: datetime
) -> ServingPrice:
    """The serving price in force for ``base_model`` at ``t`` among ``entries``
    (``PriceList.serving_entries``), else ``"*"``'s; NotFound if neither had one in force."""
    t = check_utc(t, where="t")
    in_force: dict[str, tuple[datetime, ServingPrice]] = {}
    for name, effective_at, price in entries:
        later = name not in in_force or in_force[name][0] <= effective_at
        if name in (base_model, ANY_BASE_MODEL) and effective_at <= t and later:
            in_force[name] = (effective_at, price)
    for name in (base_model, ANY_BASE_MODEL):
        if name in in_force:
            return in_force[name][1]
    raise NotFound(f"no serving price for {base_model!r} at {t.isoformat()}", where="base_model")


def _check_effective(effective_at: datetime, at: datetime) -> datetime:
    effective_at = check_utc(effective_at, where="effective_at")
    now = check_utc(at)
    if effective_at < now:
        raise ValidationFailed(
            f"effective_at {effective_at.isoformat()} is in the past (now {now.isoformat()}); "
            "a price takes effect now or later",
            where="effective_at",
        )
    return effective_at


def _check_later(history: list[dict[str, Any]], what: str, effective_at: datetime) -> None:
    if history and effective_at <= history[-1]["effective_at"]:
        latest = history[-1]["effective_at"].isoformat()
        raise Conflict(
            f"a {what} price is already set effective {latest}; a change must take effect later",
            where="effective_at",
        )
