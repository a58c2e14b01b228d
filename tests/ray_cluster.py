"""A local Ray head for the tests: ``ray_head()`` runs ``ray start --head --block`` on free ports.

It runs in its own process group with its own temp folder (so it meets no other Ray on this
machine), ``--num-cpus 2``, the dashboard on 127.0.0.1, and ``RAY_JOB_STOP_WAIT_TIME_S=30`` (the
backend sets its own per job); it yields the dashboard's URL (the Jobs API) and is stopped, its
processes killed by their group, when the block ends. Without ``ray`` installed: ``RayMissing``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.emulators import EmulatorError, free_ports

__all__ = ["RayMissing", "ray_executable", "ray_head"]

_START_TIMEOUT_S = 60.0
_PORTS = (
    "port", "dashboard-port", "node-manager-port", "object-manager-port", "runtime-env-agent-port",
    "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port",
    "ray-client-server-port",
)  # fmt: skip


class RayMissing(RuntimeError):
    """ray is not importable here."""


def ray_executable() -> str:
    """The ``ray`` command of this venv; RayMissing where ray is not importable."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise RayMissing(f"ray is not installed ({exc}): scripts/setup installs it") from exc
    ray_bin = Path(sys.executable).parent / "ray"
    return str(ray_bin) if ray_bin.exists() else (shutil.which("ray") or "ray")


def _ready(url: str) -> bool:
    """The Jobs API answers and the head node is alive, with its CPUs."""
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as reply:
            if reply.status != 200:
                return False
    except (urllib.error.URLError, OSError):
        return False
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=url, detail=True)
    except Exception:  # the state API is not up yet
        return False
    if not any(n.state == "ALIVE" and n.resources_total.get("CPU") for n in nodes):
        return False
    from ray.job_submission import JobSubmissionClient

    try:  # the job agent takes submissions only a while after the head is up
        JobSubmissionClient(url).submit_job(entrypoint="true", entrypoint_num_cpus=0)
    except Exception:
        return False
    return True


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh Ray head; yields ``http://127.0.0.1:<dashboard port>``."""
    ray = ray_executable()
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths are limited
    drawn = free_ports(len(_PORTS) + num_cpus + 8)  # all different: Ray refuses a port named twice
    ports = dict(zip(_PORTS, drawn, strict=False))  # Ray's defaults would meet another head's
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    log = temp / "head.log"
    argv = [
        ray, "start", "--head", "--block", "--disable-usage-stats",
        f"--num-cpus={num_cpus}", "--num-gpus=0", "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp}", "--include-dashboard=true",
        *(f"--{name}={port}" for name, port in ports.items()),
        f"--worker-port-list={','.join(str(port) for port in drawn[len(_PORTS):])}",
    ]  # fmt: skip
    head_env = {**os.environ, "RAY_JOB_STOP_WAIT_TIME_S": "30", **(env or {})}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=head_env,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise EmulatorError(f"the Ray head did not start (log {log}):\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)
