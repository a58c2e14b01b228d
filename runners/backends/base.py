"""The seam between the dispatcher and whatever runs a job runner: ``LaunchBackend``.

A backend runs what it is given, at once, and reports when it has ended; the dispatcher
keeps the queue, decides what runs next and reads the outcome from the job's events (a
backend only knows exit statuses). What runs is always the same command,
``python -m runners.job_runner <bucket_url> <run_object>`` (``LaunchRequest.argv``), so a
local subprocess and a Ray job (``ray.job_submission``: entrypoint, ``entrypoint_num_gpus``)
differ only in where it runs.
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["LaunchBackend", "LaunchFailed", "LaunchRequest", "RunStatus", "runner_argv"]


def runner_argv(bucket_url: str, run_object: str, *, python: str = sys.executable) -> list[str]:
    """The job runner's command line."""
    return [python, "-m", "runners.job_runner", bucket_url, run_object]


class LaunchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt to run: which run.yaml, and what it needs."""

    run_id: str
    """Unique per launch: ``<job_id>-<attempt>-<random>``."""
    user_id: str
    job_id: str
    attempt: int
    bucket_url: str
    run_object: str
    gpu_type: str
    gpu_count: int

    @property
    def argv(self) -> list[str]:
        return runner_argv(self.bucket_url, self.run_object)


class RunStatus(msgspec.Struct, frozen=True):
    """A launched run: still running, or ended with ``exit_code`` (negative: killed by that signal)."""

    run_id: str
    running: bool
    exit_code: int | None = None


class LaunchFailed(Exception):
    """The backend could not start the run (nothing is running for it)."""


@runtime_checkable
class LaunchBackend(Protocol):
    """Runs job runners; thread-safe."""

    def launch(self, request: LaunchRequest) -> None:
        """Start the run now; LaunchFailed if it cannot."""

    def status(self, run_id: str) -> RunStatus:
        """Whether the run is still going (KeyError for a run this backend does not know)."""

    def stop(self, run_id: str) -> None:
        """Ask the run to end gracefully (SIGTERM: the runner checkpoints and records the outcome)."""

    def forget(self, run_id: str) -> None:
        """Drop an ended run's bookkeeping."""

    def close(self, timeout: float = 30.0) -> None:
        """Stop every run still going, wait up to ``timeout`` seconds, then kill what is left."""
