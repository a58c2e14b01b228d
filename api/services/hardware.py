"""The hardware on offer: what a job may ask for (``domain.hardware``), from the platform's view.

The dispatcher that launches jobs may run in another process: what its backend offers reaches
the API as events (``PlatformApp.offer_hardware``) projected to ``platform/metadata/hardware.json``.
Before any offer was recorded there is no view, and the platform offers ``BEFORE_ANY_OFFER``.
"""

from __future__ import annotations

from api import schemas
from domain.hardware import BEFORE_ANY_OFFER, check_offered
from runtime.context import Runtime
from storage import layout

__all__ = ["HardwareService"]


class HardwareService:
    """Reads the hardware on offer; the same for every caller."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def hardware(self) -> schemas.Hardware:
        before = [schemas.HardwareOffer(gpu_type=t, gpu_count=c) for t, c in sorted(BEFORE_ANY_OFFER.items())]
        return self.rt.view_or(layout.hardware(), schemas.Hardware, schemas.Hardware(offers=before))

    def offers(self) -> dict[str, int]:
        """GPU type -> the largest count one job may ask for."""
        return {offer.gpu_type: offer.gpu_count for offer in self.hardware().offers}

    def check_offered(self, gpu_type: str, gpu_count: int) -> None:
        """``HardwareNotOffered`` (422) naming the request and what exists, unless it is offered."""
        check_offered(gpu_type, gpu_count, self.offers())
