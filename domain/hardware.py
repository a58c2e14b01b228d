"""The hardware on offer (platform singleton): what the launch backends can place a job on.

Each source of hardware records what it offers: a dispatcher its launch backend's
``offers()`` (source ``local``, or the backend's own name) when it starts, only when that
changed; an operator the hardware of a cluster no dispatcher of this platform probes
(``tune admin hardware set``, source ``operator``). An offer maps a GPU type to the largest
count one job may be placed on; an empty offer withdraws the source. What the platform
offers is every source's offers together (the largest count per type): a job for a GPU type
or count outside it is refused at submit (``check_offered``), naming what exists.

Before any source ever offered hardware the platform offers ``BEFORE_ANY_OFFER`` (``cpu`` x1,
which the local backend always offers), so a fresh platform runs CPU jobs and refuses
GPU jobs until a dispatcher or an operator says there are GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count
from domain.errors import NotOffered
from domain.gpu_types import CPU
from domain.ids import check_id
from domain.pricing import check_gpu_type

__all__ = [
    "BEFORE_ANY_OFFER",
    "MAX_GPU_COUNT",
    "HardwareNotOffered",
    "HardwareOffers",
    "HardwareOffersFields",
    "check_offered",
    "combined_offers",
    "describe_offers",
]

MAX_GPU_COUNT = 16
"""The most GPUs one job may ask for (``TrainingConfig.gpu_count``)."""
BEFORE_ANY_OFFER: dict[str, int] = {CPU: 1}
"""What the platform offers before any source recorded an offer."""


class HardwareNotOffered(NotOffered):
    """A job asks for hardware no backend offers (HTTP 422, code ``hardware_not_offered``)."""

    code = "hardware_not_offered"


class HardwareOffersFields:
    """What ``HardwareOffers`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    sources: dict[str, dict[str, int]]
    """Each source's offer: GPU type -> the largest count one job may be placed on."""
    updated_at: datetime


class HardwareOffers(DomainAggregate, HardwareOffersFields):
    """The one record of what each source of hardware offers (a singleton)."""

    ID_KIND, ID_KEY = "hardware_offers", ""

    class Created(Aggregate.Created):
        at: datetime

        def apply(self, hardware: HardwareOffers) -> None:
            hardware.sources, hardware.updated_at = {}, self.at

    class HardwareOffered(Aggregate.Event):
        """``source`` now offers ``offers`` (GPU type -> largest count); empty: it offers nothing."""

        source: str
        offers: dict[str, int]
        at: datetime

        def apply(self, hardware: HardwareOffers) -> None:
            if self.offers:
                hardware.sources[self.source] = dict(self.offers)
            else:
                hardware.sources.pop(self.source, None)
            hardware.updated_at = self.at

    @classmethod
    def create(cls, at: datetime) -> HardwareOffers:
        return cls._create_at(cls.Created, at)

    def offer(self, source: str, offers: Mapping[str, int], at: datetime) -> bool:
        """Record ``source``'s offer unless it is what it offers already; True if recorded."""
        check_id(source, kind="source")
        checked = check_offers(offers)
        if checked == self.sources.get(source, {}):
            return False
        self._record(self.HardwareOffered, at, source=source, offers=checked)
        return True

    @property
    def offers(self) -> dict[str, int]:
        """Every source's offers together (``combined_offers``)."""
        return combined_offers(self.sources)


def check_offers(offers: Mapping[str, int]) -> dict[str, int]:
    """``offers`` checked (priced-type shape, counts 1..16), sorted by GPU type."""
    checked: dict[str, int] = {}
    for gpu_type, count in sorted(offers.items()):
        check_gpu_type(gpu_type)
        check_count(count, where=f"offers.{gpu_type}", minimum=1, maximum=MAX_GPU_COUNT)
        checked[gpu_type] = count
    return checked


def combined_offers(sources: Mapping[str, Mapping[str, int]] | None) -> dict[str, int]:
    """The largest count per GPU type over every source; ``BEFORE_ANY_OFFER`` when ``sources`` is
    None (no offer was ever recorded). An empty mapping (every source withdrew) offers nothing."""
    if sources is None:
        return dict(BEFORE_ANY_OFFER)
    combined: dict[str, int] = {}
    for offer in sources.values():
        for gpu_type, count in offer.items():
            combined[gpu_type] = max(count, combined.get(gpu_type, 0))
    return dict(sorted(combined.items()))


def describe_offers(offers: Mapping[str, int]) -> str:
    """``a100-80gb x2, cpu x1`` (``nothing`` when empty)."""
    return ", ".join(f"{gpu_type} x{count}" for gpu_type, count in sorted(offers.items())) or "nothing"


def check_offered(gpu_type: str, gpu_count: int, offers: Mapping[str, int]) -> None:
    """``HardwareNotOffered`` naming ``gpu_type``/``gpu_count`` and what exists, unless offered."""
    most = offers.get(gpu_type)
    if most is not None and gpu_count <= most:
        return
    asked = f"{gpu_type} x{gpu_count}"
    why = f"at most {most} per job" if most is not None else "no backend offers that GPU type"
    raise HardwareNotOffered(
        f"no backend can run a job on {asked} ({why}); offered: {describe_offers(offers)}",
        where="gpu_type" if most is None else "gpu_count",
    )
