"""Launch backends: where job runners run. ``LocalSubprocessBackend`` is the default; a cluster
backend (Ray's job submission API) implements the same ``LaunchBackend`` protocol."""

from runners.backends.base import LaunchBackend, LaunchFailed, LaunchRequest, RunStatus, runner_argv
from runners.backends.local import LocalSubprocessBackend

__all__ = [
    "LaunchBackend",
    "LaunchFailed",
    "LaunchRequest",
    "LocalSubprocessBackend",
    "RunStatus",
    "runner_argv",
]
