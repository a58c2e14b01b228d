"""Launch backends: where job runners run. ``LocalSubprocessBackend`` is the default; a cluster
backend (Ray's job submission API) implements the same ``LaunchBackend`` protocol."""

from runners.backends.base import (
    LaunchBackend,
    LaunchFailed,
    LaunchRequest,
    NotPlaceable,
    RunStatus,
    runner_argv,
)
from runners.backends.local import LocalSubprocessBackend, cuda_device_names, local_offers

__all__ = [
    "LaunchBackend",
    "LaunchFailed",
    "LaunchRequest",
    "LocalSubprocessBackend",
    "NotPlaceable",
    "RunStatus",
    "cuda_device_names",
    "local_offers",
    "runner_argv",
]
