"""``RayJobsBackend``: each job runner is a Ray job (``ray.job_submission``), on a Ray cluster.

A launch submits one job: submission id = the run id, entrypoint = the runner's argv behind
``runners.backends.ray_entry`` (which prints the runner's exit status into the job's log),
resources = the placement (``entrypoint_num_gpus`` = its GPU count, pinned to the chosen node by
Ray's ``node:<ip>`` resource; a ``cpu`` run asks one CPU), runtime env = the runner's environment
(the backend's own ``env``: bucket credentials, ``PUBSUB_EMULATOR_HOST``...; the request's secrets:
the attempt's heartbeat secret and the runner's signing key; and ``RAY_JOB_STOP_WAIT_TIME_S``).

Heartbeats: a Ray job's stdout goes to its log, not to the dispatcher, so its runner publishes
them itself to the run.yaml's ``heartbeat_url``, a ``pubsub://`` topic (ordering key: the job id)
the ledger subscribes to (``check_heartbeat_url`` refuses ``stdout:`` and ``direct://``).

The queue stays the dispatcher's: Ray leaves a job for resources no node has ``PENDING`` and
``stop_job`` does not cancel it before ``RAY_JOB_START_TIMEOUT_SECONDS`` (15 min), so only what
fits is submitted. ``offers()`` reads the alive nodes (``ray.util.state.list_nodes``: their total
``GPU``, ``CPU`` and Ray's ``accelerator_type:<name>`` resource, named by
``domain.gpu_types.gpu_type_of_ray_accelerator``); ``place`` picks the first node with enough of
that type not taken by this backend's runs going now (``NoCapacity`` when all are taken,
``NotPlaceable`` when no node has it). The backend assumes it is the one dispatcher of its cluster.

Stopping: ``stop_job`` sends SIGTERM to every process of the job, then SIGKILL after
``RAY_JOB_STOP_WAIT_TIME_S``. Ray reads it in the job's supervisor, whose environment is the job's
runtime env, so each job gets ``stop_wait_s`` (default 300 s: above the trainer's checkpoint time;
Ray's own default, 3 s, kills a run mid-checkpoint). There is no other kill: ``close(timeout)``
waits up to ``max(timeout, stop_wait_s)`` plus a margin. A stopped job is ``STOPPED`` in Ray
whatever its runner did: the exit status printed by ``ray_entry`` tells, and without that line the
run was killed (``-9``). On its end a run's log is copied to ``log_dir/<run_id>.log``.

Adoption: each job's metadata holds its user, job, attempt and placement; ``alive_runs`` lists the
cluster's jobs not yet ended that carry them (``list_jobs``), so a restarted dispatcher adopts its
predecessor's runs instead of submitting them again (and counts their GPUs as taken).

Secrets in the runtime env are visible to whoever can read the cluster's job list (the dashboard:
it binds 127.0.0.1 unless told otherwise; the other Ray ports bind every interface, so the cluster
belongs on a private network).
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from domain.gpu_types import CPU, gpu_type_of_ray_accelerator
from domain.hardware import describe_offers
from domain.placement import Placement
from runners.backends.base import (
    AliveRun,
    LaunchFailed,
    LaunchRequest,
    NoCapacity,
    NotPlaceable,
    RunStatus,
    runner_argv,
)
from runners.backends.ray_entry import exit_status_of

__all__ = [
    "ACCELERATOR_RESOURCE",
    "RayJobsBackend",
    "RayNode",
    "check_heartbeat_url",
    "choose_node",
    "nodes_of",
    "ray_offers",
]

log = logging.getLogger(__name__)

Argv = Callable[[LaunchRequest], list[str]]

ACCELERATOR_RESOURCE = "accelerator_type:"
"""The prefix of the resource Ray gives a node with GPUs: ``accelerator_type:H100`` (1.0)."""
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
_KILLED = -9
_CLOSE_MARGIN_S = 30.0


class RayNode(msgspec.Struct, frozen=True):
    """An alive node of the cluster: its CPUs, and its GPUs if we can name their type."""

    node_id: str
    ip: str
    cpus: int
    gpus: int = 0
    gpu_type: str | None = None


def nodes_of(states: Iterable[Any]) -> list[RayNode]:
    """The alive nodes in ``ray.util.state.list_nodes`` rows (``node_id``, ``node_ip``, ``state``,
    ``resources_total``). GPUs of an accelerator type no GPU type lists are not offered (logged)."""
    nodes = []
    for state in states:
        if state.state != "ALIVE":
            continue
        resources: Mapping[str, float] = state.resources_total or {}
        gpus = int(resources.get("GPU", 0))
        names = [
            k.removeprefix(ACCELERATOR_RESOURCE) for k in resources if k.startswith(ACCELERATOR_RESOURCE)
        ]
        gpu_type = gpu_type_of_ray_accelerator(names[0]) if len(names) == 1 else None
        if gpus and gpu_type is None:
            log.warning(
                "node %s: its %d GPU(s) (%s) are not offered: no GPU type lists them",
                state.node_ip,
                gpus,
                names,
            )
            gpus = 0
        nodes.append(RayNode(state.node_id, state.node_ip, int(resources.get("CPU", 0)), gpus, gpu_type))
    return nodes


def _capacity(node: RayNode, gpu_type: str) -> int:
    if gpu_type == CPU:
        return node.cpus
    return node.gpus if node.gpu_type == gpu_type else 0


def ray_offers(nodes: Iterable[RayNode]) -> dict[str, int]:
    """GPU type -> the largest count one run may be placed on (``cpu``: 1, if any node has a CPU)."""
    offers: dict[str, int] = {}
    for node in nodes:
        if node.cpus >= 1:
            offers[CPU] = 1
        if node.gpu_type is not None and node.gpus:
            offers[node.gpu_type] = max(offers.get(node.gpu_type, 0), node.gpus)
    return dict(sorted(offers.items()))


def choose_node(nodes: Iterable[RayNode], used: Mapping[str, int], gpu_type: str, gpu_count: int) -> RayNode:
    """The first node with ``gpu_count`` x ``gpu_type`` not ``used`` (node id -> units of its type
    taken: GPUs, or CPUs for ``cpu`` runs). NotPlaceable: no node has that many; NoCapacity: all taken."""
    nodes = list(nodes)
    fitting = [n for n in nodes if _capacity(n, gpu_type) >= gpu_count]
    if not fitting:
        raise NotPlaceable(
            f"the Ray cluster has no {gpu_type} x{gpu_count}; it offers {describe_offers(ray_offers(nodes))}"
        )
    for node in fitting:
        if _capacity(node, gpu_type) - used.get(node.node_id, 0) >= gpu_count:
            return node
    raise NoCapacity(f"every {gpu_type} x{gpu_count} of the Ray cluster is taken by runs going now")


def check_heartbeat_url(url: str) -> str:
    """A Ray job's runner publishes its heartbeats itself: only a ``pubsub://`` URL reaches the ledger."""
    if not url.startswith("pubsub://"):
        raise ValueError(
            f"runners on Ray publish heartbeats to Pub/Sub (pubsub://project/topic/subscription), not {url!r}"
        )
    return url


class _Run:
    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self.ended: RunStatus | None = None


class RayJobsBackend:
    """Runs job runners as Ray jobs (see the module docstring).

    Args:
        address: the cluster's dashboard, ``http://127.0.0.1:8265``.
        env: environment variables every runner gets (e.g. ``TUNE_HOME``, ``PUBSUB_EMULATOR_HOST``).
        python: the runners' Python on the cluster's nodes.
        argv: the command for a request (default: ``python -m runners.job_runner ...``).
        cwd: the folder the runner starts in on its node (None: the job's own).
        stop_wait_s: seconds between a stop's SIGTERM and Ray's SIGKILL (the runner checkpoints).
        log_dir: where an ended run's log is copied (``<run_id>.log``; None: not copied).
        client: a ``JobSubmissionClient`` (None: one for ``address``, made on first use).
        list_nodes: the cluster's node rows (None: ``ray.util.state.list_nodes`` at ``address``).
    """

    def __init__(
        self,
        address: str,
        *,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        argv: Argv | None = None,
        cwd: Path | None = None,
        stop_wait_s: int = 300,
        log_dir: Path | None = None,
        client: Any = None,
        list_nodes: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        if stop_wait_s < 1:
            raise ValueError("stop_wait_s must be at least 1")
        self.address = address
        self.env = dict(env or {})
        self.python = python
        self.argv: Argv = argv or (lambda r: runner_argv(r.bucket_url, r.run_object, python=self.python))
        self.cwd = cwd
        self.stop_wait_s = stop_wait_s
        self.log_dir = log_dir
        self._client = client
        self._list_nodes = list_nodes
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # ---- hardware ----

    def nodes(self) -> list[RayNode]:
        """The cluster's alive nodes, asked now."""
        if self._list_nodes is not None:
            return nodes_of(self._list_nodes())
        from ray.util.state import list_nodes

        try:
            return nodes_of(list_nodes(address=self.address, detail=True))
        except Exception as exc:  # the state API raises its own and requests' errors
            raise LaunchFailed(f"the Ray cluster at {self.address} did not answer: {exc}") from exc

    def offers(self) -> dict[str, int]:
        return ray_offers(self.nodes())

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        node = choose_node(self.nodes(), self._used(gpu_type), gpu_type, gpu_count)
        return Placement(gpu_type=gpu_type, gpu_count=gpu_count, node=node.node_id)

    def _used(self, gpu_type: str) -> dict[str, int]:
        used: dict[str, int] = {}
        with self._lock:
            for run in self._runs.values():
                if run.ended is None and run.placement.gpu_type == gpu_type:
                    used[run.placement.node] = used.get(run.placement.node, 0) + run.placement.gpu_count
        return used

    # ---- runs ----

    def launch(self, request: LaunchRequest) -> Placement:
        with self._lock:
            if request.run_id in self._runs:
                raise LaunchFailed(f"run {request.run_id} was already launched")
        placement = request.placement or self.place(request.gpu_type, request.gpu_count)
        node = next((n for n in self.nodes() if n.node_id == placement.node), None)
        if node is None:
            raise LaunchFailed(f"Ray node {placement.node} is gone")
        command = shlex.join([self.python, "-m", "runners.backends.ray_entry", *self.argv(request)])
        if self.cwd is not None:
            command = f"cd {shlex.quote(str(self.cwd))} && {command}"
        gpus = 0 if placement.gpu_type == CPU else placement.gpu_count
        try:
            self.client().submit_job(
                entrypoint=command,
                submission_id=request.run_id,
                runtime_env={"env_vars": {**self.env, **request.env, STOP_WAIT_ENV: str(self.stop_wait_s)}},
                entrypoint_num_cpus=placement.gpu_count if gpus == 0 else 0,
                entrypoint_num_gpus=gpus,
                entrypoint_resources={f"node:{node.ip}": 0.001},
                metadata={
                    "user_id": request.user_id,
                    "job_id": request.job_id,
                    "attempt": str(request.attempt),
                    "gpu_type": placement.gpu_type,
                    "gpu_count": str(placement.gpu_count),
                    "node": placement.node,
                },
            )
        except Exception as exc:  # the SDK raises RuntimeError for HTTP errors, requests' for the rest
            raise LaunchFailed(f"Ray did not take run {request.run_id}: {exc}") from exc
        with self._lock:
            self._runs[request.run_id] = _Run(placement)
        log.info(
            "launched %s on Ray node %s (%s) with %d x %s",
            request.run_id,
            node.node_id[:12],
            node.ip,
            placement.gpu_count,
            placement.gpu_type,
        )
        return placement

    def status(self, run_id: str) -> RunStatus:
        run = self._run(run_id)
        if run.ended is not None:
            return run.ended
        info = self.client().get_job_info(run_id)
        if not info.status.is_terminal():
            return RunStatus(run_id, running=True)
        logs = self.client().get_job_logs(run_id)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{run_id}.log").write_text(logs)
        code = exit_status_of(logs)
        if code is None:
            code = _KILLED if info.status == "STOPPED" else info.driver_exit_code
        if info.message and code != 0:
            log.info("Ray job %s: %s: %.300s", run_id, info.status, info.message)
        run.ended = RunStatus(run_id, running=False, exit_code=code)
        return run.ended

    def stop(self, run_id: str) -> None:
        if self._run(run_id).ended is None:
            self.client().stop_job(run_id)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def alive_runs(self) -> list[AliveRun]:
        try:
            jobs = self.client().list_jobs()
        except Exception as exc:  # the SDK raises RuntimeError for HTTP errors, requests' for the rest
            raise LaunchFailed(f"the Ray cluster at {self.address} did not answer: {exc}") from exc
        with self._lock:
            known = set(self._runs)
        alive = []
        for job in jobs:
            meta = job.metadata or {}
            if job.submission_id is None or job.submission_id in known or job.status.is_terminal():
                continue
            if not {"user_id", "job_id", "attempt"} <= set(meta):
                continue  # not a runner this platform submitted
            placement = Placement(
                gpu_type=meta.get("gpu_type", CPU),
                gpu_count=int(meta.get("gpu_count", 1)),
                node=meta.get("node", ""),
            )
            alive.append(
                AliveRun(
                    run_id=job.submission_id,
                    user_id=meta["user_id"],
                    job_id=meta["job_id"],
                    attempt=int(meta["attempt"]),
                    placement=placement,
                )
            )
        return alive

    def adopt(self, run: AliveRun) -> None:
        with self._lock:
            self._runs[run.run_id] = _Run(run.placement)
        log.info("adopted Ray job %s", run.run_id)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every run; Ray kills what has not ended ``stop_wait_s`` after; wait for that."""
        with self._lock:
            run_ids = [run_id for run_id, run in self._runs.items() if run.ended is None]
        for run_id in run_ids:
            try:
                self.stop(run_id)
            except Exception:  # one run Ray cannot stop must not keep the others going
                log.exception("stopping Ray job %s failed", run_id)
        deadline = time.monotonic() + max(timeout, self.stop_wait_s) + _CLOSE_MARGIN_S
        for run_id in run_ids:
            while time.monotonic() < deadline:
                try:
                    if not self.status(run_id).running:
                        break
                except Exception:
                    log.exception("asking Ray about job %s failed", run_id)
                time.sleep(0.2)
            else:
                log.warning("Ray job %s did not end in time", run_id)

    def client(self) -> Any:
        """The ``JobSubmissionClient`` (made on first use)."""
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as exc:
                raise LaunchFailed("the Ray backend needs ray: pip install 'ray[default]'") from exc
            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as exc:
                raise LaunchFailed(f"the Ray cluster at {self.address} did not answer: {exc}") from exc
        return self._client

    def _run(self, run_id: str) -> _Run:
        with self._lock:
            return self._runs[run_id]
