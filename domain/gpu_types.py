"""The GPU types the platform knows out of the box: one row each, every figure about a type in one place.

A row gives the type's default price (what a new platform's price list starts with:
``PlatformApp.ensure_default_prices``; running systems change prices with ``set_price``), the
training throughput the cost estimate assumes (``domain.estimate``) and the CUDA device names
(as ``torch.cuda.get_device_name`` reports them) that are this type: the local launch backend
offers a device only when its name is listed here (``gpu_type_of_device``), so a device we
cannot name is never offered, and never billed as something it is not. A GPU type not listed
here can still be priced and used; the estimate then assumes ``DEFAULT_TOKENS_PER_S``.
Adding a type is adding a row.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CPU",
    "DEFAULT_TOKENS_PER_S",
    "GPU_TYPES",
    "GpuType",
    "gpu_type_of_device",
    "gpu_type_of_ray_accelerator",
]


class GpuType(NamedTuple):
    usd_micros_per_hour: int
    """Typical 2026 on-demand price of one GPU (its share of the VM), micro-dollars per hour."""
    tokens_per_s: int
    """Assumed training tokens per second per device (a ~1B model with LoRA); a rough guide."""
    device_names: tuple[str, ...] = ()
    """CUDA device names of this type, exactly as ``torch.cuda.get_device_name`` gives them."""
    ray_accelerator_types: tuple[str, ...] = ()
    """Ray's names of this type (a node's ``accelerator_type:<name>`` resource, ``ray.util.accelerators``)."""


CPU = "cpu"
"""The GPU type of a run on the machine's CPU (no accelerator)."""

GPU_TYPES: dict[str, GpuType] = {
    "t4": GpuType(350_000, 2_000, ("Tesla T4",), ("T4",)),
    "l4": GpuType(800_000, 3_500, ("NVIDIA L4",), ("L4",)),
    "a100-40gb": GpuType(
        1_600_000, 11_000, ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"), ("A100-40G",)
    ),
    "a100-80gb": GpuType(
        2_100_000, 12_000, ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), ("A100-80G",)
    ),
    "h100-80gb": GpuType(2_900_000, 20_000, ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"), ("H100",)),
    "h200": GpuType(3_600_000, 22_000, ("NVIDIA H200",), ("H200",)),
    CPU: GpuType(50_000, 300),  # a local run on CPU: small but not free, so local jobs produce bills
}

DEFAULT_TOKENS_PER_S = 2_000
"""What the estimate assumes of a GPU type that is not in ``GPU_TYPES``."""

_BY_DEVICE_NAME = {name: gpu_type for gpu_type, row in GPU_TYPES.items() for name in row.device_names}
_BY_RAY_NAME = {name: gpu_type for gpu_type, row in GPU_TYPES.items() for name in row.ray_accelerator_types}


def gpu_type_of_device(device_name: str) -> str | None:
    """Our GPU type id of a CUDA device named ``device_name`` (``torch.cuda.get_device_name``), or
    None for a device no row lists (leading and trailing blanks aside, names match exactly)."""
    return _BY_DEVICE_NAME.get(device_name.strip())


def gpu_type_of_ray_accelerator(accelerator_type: str) -> str | None:
    """Our GPU type id of Ray's ``accelerator_type`` (e.g. ``H100``), or None for one no row lists
    (Ray's plain ``A100`` does not say 40 or 80 GB: such a node is not offered)."""
    return _BY_RAY_NAME.get(accelerator_type)
