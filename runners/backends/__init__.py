"""Launch backends: where job runners run. ``LocalSubprocessBackend`` is the default;
``RayJobsBackend`` runs them as Ray jobs on a cluster (``ray`` is imported only when one is built).
Both implement ``LaunchBackend``."""

from runners.backends.base import (
    AliveRun,
    LaunchBackend,
    LaunchFailed,
    LaunchRequest,
    NoCapacity,
    NotPlaceable,
    RunStatus,
    runner_argv,
)
from runners.backends.local import LocalSubprocessBackend, cuda_device_names, local_offers
from runners.backends.ray_jobs import RayJobsBackend

__all__ = [
    "AliveRun",
    "LaunchBackend",
    "LaunchFailed",
    "LaunchRequest",
    "LocalSubprocessBackend",
    "NoCapacity",
    "NotPlaceable",
    "RayJobsBackend",
    "RunStatus",
    "cuda_device_names",
    "local_offers",
    "runner_argv",
]
