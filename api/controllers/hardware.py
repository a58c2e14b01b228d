"""``/hardware``: what a job may ask for (GPU type and count), as the launch backends offer it."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from api.errors import documented
from api.schemas import Hardware
from api.services import HardwareService
from runtime.context import Runtime


class HardwareController(Controller):
    path = "/hardware"
    tags = ["hardware"]

    @get("/", operation_id="list_hardware", responses=documented())
    async def list_hardware(self, runtime: NamedDependency[Runtime]) -> Hardware:
        """The GPU types on offer with the largest count one job may use (every source together), and
        what each source (a dispatcher's backend, an operator) offers. A job for anything else is
        refused at submit (422)."""
        return await runtime.io(HardwareService(runtime).hardware)
