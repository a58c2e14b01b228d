"""The seam between the dispatcher and whatever runs a job runner: ``LaunchBackend``.

A backend runs what it is given, at once, and reports when it has ended; the dispatcher
keeps the queue, decides what runs next and reads the outcome from the job's events (a
backend only knows exit statuses). What runs is always the same command,
``python -m runners.job_runner <bucket_url> <run_object>`` (``LaunchRequest.argv``), so a
local subprocess and a Ray job (``ray.job_submission``: entrypoint, ``entrypoint_num_gpus``)
differ only in where it runs. The attempt's heartbeat secret (``LaunchRequest.heartbeat_secret``)
goes to that runner alone, in its environment as ``HEARTBEAT_SECRET_ENV`` (for Ray:
``runtime_env={"env_vars": ...}``), never in a log, the run.yaml or any other bucket object.

Placement is the truth: a backend says what hardware it has (``offers()``: GPU type -> the
largest count one run may be placed on; the dispatcher records it, so the API refuses jobs
for anything else), and where an attempt would run (``place``: before the run.yaml is
written, which carries the placement) and where it did run (``launch`` returns the placement
it used). The ledger bills an attempt by that placement, never by what its heartbeats claim.

A dispatcher that restarts finds the runs its predecessor launched that are still going
(``alive_runs``: the local backend's run records in its ``log_dir``, checked against the live
processes; the Ray jobs not yet ended, by their metadata) and ``adopt``s them: they are then this
backend's runs as if launched here (status, stop, close), so nothing is launched again.
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

import msgspec

from domain.placement import Placement

__all__ = [
    "HEARTBEAT_SECRET_ENV",
    "AliveRun",
    "LaunchBackend",
    "LaunchFailed",
    "LaunchRequest",
    "NoCapacity",
    "NotPlaceable",
    "RunStatus",
    "runner_argv",
]


HEARTBEAT_SECRET_ENV = "TUNE_HEARTBEAT_SECRET"
"""The runner's environment variable holding its attempt's secret (``storage.heartbeats.heartbeat``)."""


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
    heartbeat_secret: str | None = None
    """The attempt's heartbeat secret (None: its heartbeats go unsigned and the ledger drops them)."""
    placement: Placement | None = None
    """Where to run it, as ``LaunchBackend.place`` chose (None: the backend places it at launch)."""
    signing_env: dict[str, str] = msgspec.field(default_factory=dict)
    """The runner role's commit-signing key and the root public key (``Ledger.role_env``): secrets."""

    @property
    def argv(self) -> list[str]:
        return runner_argv(self.bucket_url, self.run_object)

    @property
    def env(self) -> dict[str, str]:
        """What the runner's environment must hold besides the backend's own (secrets: never logged)."""
        secret = {} if self.heartbeat_secret is None else {HEARTBEAT_SECRET_ENV: self.heartbeat_secret}
        return {**self.signing_env, **secret}

    def __repr__(self) -> str:  # the secret never reaches a log
        return f"LaunchRequest(run_id={self.run_id!r}, run_object={self.run_object!r})"


class AliveRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run still going that an earlier process of this backend launched (``alive_runs``)."""

    run_id: str
    user_id: str
    job_id: str
    attempt: int
    placement: Placement


class RunStatus(msgspec.Struct, frozen=True):
    """A launched run: still running, or ended with ``exit_code`` (negative: killed by that signal)."""

    run_id: str
    running: bool
    exit_code: int | None = None


class LaunchFailed(Exception):
    """The backend could not start the run (nothing is running for it)."""


class NotPlaceable(LaunchFailed):
    """The backend has no hardware of the kind asked for (``offers()`` says what it has)."""


class NoCapacity(LaunchFailed):
    """The backend has that hardware, but all of it is taken by runs going now: try again later
    (a cluster backend submits only what fits, so nothing waits inside the cluster)."""


@runtime_checkable
class LaunchBackend(Protocol):
    """Runs job runners; thread-safe."""

    def offers(self) -> dict[str, int]:
        """The hardware it can place a run on: GPU type -> the largest count of one run."""

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        """Where a run of ``gpu_count`` x ``gpu_type`` would run now; NotPlaceable if nowhere."""

    def launch(self, request: LaunchRequest) -> Placement:
        """Start the run now on ``request.placement`` (placed now if None); LaunchFailed if it cannot.
        Returns where it runs."""

    def status(self, run_id: str) -> RunStatus:
        """Whether the run is still going (KeyError for a run this backend does not know)."""

    def stop(self, run_id: str) -> None:
        """Ask the run to end gracefully (SIGTERM: the runner checkpoints and records the outcome)."""

    def forget(self, run_id: str) -> None:
        """Drop an ended run's bookkeeping."""

    def alive_runs(self) -> list[AliveRun]:
        """The runs still going that this backend's earlier processes launched (not yet adopted here)."""

    def adopt(self, run: AliveRun) -> None:
        """Take ``run`` (from ``alive_runs``) on as if launched here: ``status``, ``stop`` and ``close``
        know it (an adopted local run's exit status is unknown: None)."""

    def close(self, timeout: float = 30.0) -> None:
        """Stop every run still going, wait up to ``timeout`` seconds, then kill what is left."""
