"""Where a launch backend placed one attempt: the hardware the ledger prices it by.

A heartbeat's own ``gpu_type``/``gpu_count`` are a runner's claim; the placement is the
control plane's record (``Job.Started``), and only it is billed.
"""

from __future__ import annotations

import msgspec

__all__ = ["Placement"]


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """``gpu_count`` devices of ``gpu_type`` on ``node`` (a host name, a Ray node id, ``local``)."""

    gpu_type: str
    gpu_count: int
    node: str = "local"
