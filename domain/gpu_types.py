"""The GPU types the platform knows out of the box: one row each, every figure about a type in one place.

A row gives the type's default price (what a new platform's price list starts with:
``PlatformApp.ensure_default_prices``; running systems change prices with ``set_price``) and
the training throughput the cost estimate assumes (``domain.estimate``). A GPU type not listed
here can still be priced and used; the estimate then assumes ``DEFAULT_TOKENS_PER_S``.
Adding a type is adding a row.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT_TOKENS_PER_S", "GPU_TYPES", "GpuType"]


class GpuType(NamedTuple):
    usd_micros_per_hour: int
    """Typical 2026 on-demand price of one GPU (its share of the VM), micro-dollars per hour."""
    tokens_per_s: int
    """Assumed training tokens per second per device (a ~1B model with LoRA); a rough guide."""


GPU_TYPES: dict[str, GpuType] = {
    "t4": GpuType(350_000, 2_000),
    "l4": GpuType(800_000, 3_500),
    "a100-40gb": GpuType(1_600_000, 11_000),
    "a100-80gb": GpuType(2_100_000, 12_000),
    "h100-80gb": GpuType(2_900_000, 20_000),
    "h200": GpuType(3_600_000, 22_000),
    "cpu": GpuType(50_000, 300),  # a local run on CPU: small but not free, so local jobs produce bills
}

DEFAULT_TOKENS_PER_S = 2_000
"""What the estimate assumes of a GPU type that is not in ``GPU_TYPES``."""
