"""A local Ray head for the tests: ``ray_head()`` runs ``ray start --head --block`` on free ports.

It runs in its own process group with its own temp folder (so it meets no other Ray on this
machine), ``--num-cpus 2``, the node and its dashboard on 127.0.0.1, and ``RAY_JOB_STOP_WAIT_TIME_S=30`` (the
backend sets its own per job); it yields the dashboard's URL (the Jobs API) and is stopped, its
processes killed by their group, when the block ends. Its ports lie below the kernel's ephemeral range,
and a head that does not come up is started again. Without ``ray`` installed: ``RayMissing``.
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

from tests.emulators import EmulatorError, listening_ports

__all__ = ["RayMissing", "ray_executable", "ray_head"]

_START_TIMEOUT_S = 60.0
_ATTEMPTS = 3
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
    """A fresh Ray head; yields ``http://127.0.0.1:<dashboard port>``.

    A head that does not come up (its raylet not registered in Ray's own 30 s, on a loaded machine) is
    killed and started again, on other ports and in another temp folder, ``_ATTEMPTS`` times in all.
    """
    failures: list[str] = []
    for _ in range(_ATTEMPTS):
        head = _Head(num_cpus, env)
        try:
            url = head.wait_ready()
        except EmulatorError as exc:
            head.stop()
            failures.append(str(exc))
            continue
        try:
            yield url
        finally:
            head.stop()
        return
    raise EmulatorError(f"the Ray head did not start in {_ATTEMPTS} attempts:\n" + "\n\n".join(failures))


class _Head:
    """One ``ray start --head --block`` in its own process group and temp folder."""

    def __init__(self, num_cpus: int, env: dict[str, str] | None) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths are limited
        drawn = listening_ports(len(_PORTS) + num_cpus + 8)  # all different: Ray refuses a port named twice
        ports = dict(zip(_PORTS, drawn, strict=False))  # Ray's defaults would meet another head's
        self.url = f"http://127.0.0.1:{ports['dashboard-port']}"
        self.log = self.temp / "head.log"
        argv = [
            ray_executable(), "start", "--head", "--block", "--disable-usage-stats",
            f"--num-cpus={num_cpus}", "--num-gpus=0", "--dashboard-host=127.0.0.1",
            f"--temp-dir={self.temp}", "--include-dashboard=true", "--node-ip-address=127.0.0.1",
            *(f"--{name}={port}" for name, port in ports.items()),
            f"--worker-port-list={','.join(str(port) for port in drawn[len(_PORTS):])}",
        ]  # fmt: skip
        head_env = {**os.environ, "RAY_JOB_STOP_WAIT_TIME_S": "30", **(env or {})}
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=head_env,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self) -> str:
        """The head's URL once it takes jobs; EmulatorError, with its logs' tails, if it exits or stalls."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ready(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise EmulatorError(f"the Ray head did not start:\n{self._log_tails()}")
            time.sleep(0.2)
        return self.url

    def _log_tails(self) -> str:
        """The last lines of the head's log and of its raylet's and GCS's logs."""
        logs = [self.log, *sorted(self.temp.glob("session_latest/logs/raylet.*"))]
        logs += sorted(self.temp.glob("session_latest/logs/gcs_server.*"))
        tails = []
        for log in logs:
            with contextlib.suppress(OSError):
                lines = log.read_text(errors="replace").splitlines()[-12:]
                tails.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(tails)

    def stop(self) -> None:
        """Kill the head's process group and remove its temp folder."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(self.temp, ignore_errors=True)
