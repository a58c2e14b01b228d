"""GPU pricing (platform partition): ``platform/metadata/gpu_pricing.json`` and each user's copy.

``prices[gpu_type]`` holds the price in force when the price list last changed
(the fold's only clock) and the whole ``schedule``, so a reader can resolve a
price that took effect later. Each user's ``metadata/gpu_pricing.json`` is the
same view, positioned at the later of the user's registration and the last
price change. Serving prices (``PriceList.ServingPriceSet``, per base model per million tokens)
are in ``serving``, written only once one is set (so older price lists render as before).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain.money import dollars
from domain.pricing import PriceList
from projections.render import event_name, event_names, iso
from views.rows import GpuPrice, ScheduledPrice, ServingPrice

__all__ = ["EVENTS", "PricingState", "PricingView", "fold", "view"]

EVENTS = event_names(PriceList.PriceSet, PriceList.ServingPriceSet)


class PricePoint(msgspec.Struct, frozen=True):
    effective_at: datetime
    usd_micros_per_hour: int


class ServingPoint(msgspec.Struct, frozen=True):
    effective_at: datetime
    prompt_usd_micros_per_mtok: int
    completion_usd_micros_per_mtok: int


class PricingState(msgspec.Struct, frozen=True):
    schedules: dict[str, tuple[PricePoint, ...]] = msgspec.field(default_factory=dict)
    as_of: datetime | None = None
    serving: dict[str, tuple[ServingPoint, ...]] = msgspec.field(default_factory=dict)


def fold(state: PricingState, event: Any) -> PricingState:
    """The price list after one event (pure). A second price at the same instant replaces the first."""
    if event_name(event) == "PriceList.ServingPriceSet":
        sp = ServingPoint(
            event.effective_at, event.prompt_usd_micros_per_mtok, event.completion_usd_micros_per_mtok
        )
        old = [p for p in state.serving.get(event.base_model, ()) if p.effective_at != sp.effective_at]
        serving = tuple(sorted([*old, sp], key=lambda p: p.effective_at))
        return msgspec.structs.replace(
            state, serving={**state.serving, event.base_model: serving}, as_of=event.at
        )
    if event_name(event) != "PriceList.PriceSet":
        return state
    point = PricePoint(event.effective_at, event.usd_micros_per_hour)
    kept = [p for p in state.schedules.get(event.gpu_type, ()) if p.effective_at != point.effective_at]
    schedule = tuple(sorted([*kept, point], key=lambda p: p.effective_at))
    return PricingState({**state.schedules, event.gpu_type: schedule}, as_of=event.at, serving=state.serving)


class PricingView(msgspec.Struct, omit_defaults=True):
    """``gpu_pricing.json``: ``prices[gpu_type].cost_per_hour`` in dollars, as in the seed's notes;
    ``serving[base_model]`` per million tokens once a serving price is set."""

    position: int
    currency: str
    prices: dict[str, GpuPrice]
    serving: dict[str, ServingPrice] | None = None


def _in_force(schedule: tuple[Any, ...], as_of: datetime | None) -> Any:
    started = [p for p in schedule if as_of is None or p.effective_at <= as_of]
    return started[-1] if started else schedule[0]


def view(state: PricingState, position: int) -> PricingView:
    prices = {}
    for gpu_type, schedule in state.schedules.items():
        now = _in_force(schedule, state.as_of)
        prices[gpu_type] = GpuPrice(
            cost_per_hour=dollars(now.usd_micros_per_hour),
            usd_micros_per_hour=now.usd_micros_per_hour,
            effective_at=iso(now.effective_at),
            schedule=[
                ScheduledPrice(
                    effective_at=iso(p.effective_at),
                    cost_per_hour=dollars(p.usd_micros_per_hour),
                    usd_micros_per_hour=p.usd_micros_per_hour,
                )
                for p in schedule
            ],
        )
    serving = {}
    for base_model, points in sorted(state.serving.items()):
        sp: ServingPoint = _in_force(points, state.as_of)
        serving[base_model] = ServingPrice(
            prompt_per_mtok=dollars(sp.prompt_usd_micros_per_mtok),
            completion_per_mtok=dollars(sp.completion_usd_micros_per_mtok),
            prompt_usd_micros_per_mtok=sp.prompt_usd_micros_per_mtok,
            completion_usd_micros_per_mtok=sp.completion_usd_micros_per_mtok,
            effective_at=iso(sp.effective_at),
        )
    return PricingView(position, "USD", prices, serving or None)
