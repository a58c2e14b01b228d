"""The hardware on offer (platform partition): ``platform/metadata/hardware.json``.

Written from the first ``HardwareOffers.HardwareOffered`` on; before it there is no view and
the platform offers ``domain.hardware.BEFORE_ANY_OFFER`` (the API's ``GET /hardware`` and the
submit check say so).
"""

from __future__ import annotations

from typing import Any

import msgspec

from domain.hardware import HardwareOffers, combined_offers
from projections.render import event_name, event_names, iso

__all__ = ["EVENTS", "HardwareSource", "HardwareState", "HardwareView", "Offer", "fold", "view"]

EVENTS = event_names(HardwareOffers.HardwareOffered)


class Offer(msgspec.Struct, frozen=True):
    """Up to ``gpu_count`` devices of ``gpu_type`` for one job."""

    gpu_type: str
    gpu_count: int


class HardwareSource(msgspec.Struct, frozen=True):
    """What one source (a dispatcher's backend, ``operator``) offers, since ``offered_at``."""

    source: str
    offers: list[Offer]
    offered_at: str | None


class HardwareView(msgspec.Struct):
    """``platform/metadata/hardware.json``: every source's offers together, then each source's."""

    position: int
    offers: list[Offer]
    sources: list[HardwareSource]


HardwareState = dict[str, HardwareSource]


def fold(state: HardwareState, event: Any) -> HardwareState:
    """The sources after one event (pure: returns a new dict)."""
    if event_name(event) != "HardwareOffers.HardwareOffered":
        return state
    rest = {k: v for k, v in state.items() if k != event.source}
    if not event.offers:
        return rest
    offers = [Offer(t, c) for t, c in sorted(event.offers.items())]
    return {**rest, event.source: HardwareSource(event.source, offers, iso(event.at))}


def view(state: HardwareState, position: int) -> HardwareView:
    sources = {s.source: {o.gpu_type: o.gpu_count for o in s.offers} for s in state.values()}
    combined = combined_offers(sources)
    return HardwareView(
        position, [Offer(t, c) for t, c in combined.items()], [state[k] for k in sorted(state)]
    )
