"""The local backend's hardware: cpu x1 and the CUDA devices torch sees, by name (nothing else)."""

from __future__ import annotations

import pytest

from domain.gpu_types import gpu_type_of_device
from runners.backends import LocalSubprocessBackend, NotPlaceable, local_offers


def test_device_names_map_to_our_gpu_types_exactly() -> None:
    assert gpu_type_of_device("NVIDIA H100 80GB HBM3") == "h100-80gb"
    assert gpu_type_of_device("NVIDIA H200") == "h200"
    assert gpu_type_of_device("NVIDIA A100-SXM4-80GB") == "a100-80gb"
    assert gpu_type_of_device("Tesla T4") == "t4"
    assert gpu_type_of_device("NVIDIA GeForce RTX 4090") is None  # no row lists it: never offered
    assert gpu_type_of_device("H100") is None


def test_a_machine_without_cuda_offers_cpu_only() -> None:
    backend = LocalSubprocessBackend(devices=[])
    assert backend.offers() == {"cpu": 1}
    assert backend.place("cpu", 1).gpu_type == "cpu"
    with pytest.raises(NotPlaceable, match="cpu x1"):
        backend.place("h200", 1)
    with pytest.raises(NotPlaceable):
        backend.place("cpu", 2)


def test_cuda_devices_are_offered_by_name_and_count() -> None:
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]
    assert local_offers(names) == {"cpu": [], "h100-80gb": [0, 2]}
    backend = LocalSubprocessBackend(devices=names)
    assert backend.offers() == {"cpu": 1, "h100-80gb": 2}
    placement = backend.place("h100-80gb", 2)
    assert (placement.gpu_type, placement.gpu_count, placement.node) == ("h100-80gb", 2, "local")
    with pytest.raises(NotPlaceable):
        backend.place("h100-80gb", 3)
