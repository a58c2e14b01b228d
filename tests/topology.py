"""The multi-process topology (issue 13) on one host, for the topology test and ``bench/bench_topology.py``.

``running_topology(root)`` starts fake-gcs-server publishing its object notifications to the Pub/Sub
emulator that ``$PUBSUB_EMULATOR_HOST`` names (the caller runs it), creates the bucket, puts
tiny-llama in it, and starts the roles as OS processes, each following the changes on a
subscription of its own (``TUNE_CHANGE_FEED=pubsub://.../topo-*``): two API processes (``api0`` with
one worker, ``api1`` with ``api1_workers``), a projector, a ledger and a dispatcher (local backend;
its runners publish their heartbeats to Pub/Sub themselves). It yields the ``Topology``, whose
``env`` is the roles' environment, and stops every role, and any runner left, when the block ends.
``STORAGE_EMULATOR_HOST`` is set in this process meanwhile (``storage.open_bucket`` on
``env["TUNE_BUCKET"]`` reads the same bucket).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.emulators import create_gcs_bucket, fake_gcs_server, free_port

__all__ = ["PROJECT", "ROLES", "Topology", "kill_orphans", "running_topology"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT = "test-project"
ROLES = ("api0", "api1", "projector", "ledger", "dispatcher")
READY = {"projector": "projector:", "ledger": "ledger:", "dispatcher": "dispatcher ("}
RUNNER_MODULES = (b"job_runner", b"held_trainer")  # runners.job_runner, tests.fake_job_runner, tests.e2e...


class Topology:
    """The roles as separate processes on one bucket and one home (one host).

    Args:
        root: the folder of the role logs (``<role>.log``) and the home (``home/``).
        env: the roles' environment.
        heartbeats: the runners' ``pubsub://project/topic/subscription``.
        dispatcher_args: more options for ``tune run dispatcher`` (default ``--max-concurrent 1``).
        api1_workers: worker processes of the second API process.
    """

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        heartbeats: str,
        *,
        dispatcher_args: Sequence[str] = ("--max-concurrent", "1"),
        api1_workers: int = 2,
    ) -> None:
        self.root, self.env, self.heartbeats = root, env, heartbeats
        self.dispatcher_args = list(dispatcher_args)
        self.api1_workers = api1_workers
        self.ports = {"api0": free_port(), "api1": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.ports[api]}"

    def argv(self, role: str) -> list[str]:
        tune = [str(BIN / "tune"), "run"]
        if role.startswith("api"):
            workers = "1" if role == "api0" else str(self.api1_workers)
            return [*tune, "api", "--port", str(self.ports[role]), "--workers", workers]
        if role == "ledger":
            return [*tune, "ledger", "--heartbeats", self.heartbeats, "--create"]
        if role == "dispatcher":
            return [*tune, "dispatcher", "--heartbeats", self.heartbeats, *self.dispatcher_args]
        return [*tune, role]

    def log(self, role: str) -> Path:
        return self.root / f"{role}.log"

    def start(self, role: str) -> None:
        log = self.log(role)
        before = log.stat().st_size if log.exists() else 0
        with log.open("ab") as sink:
            self.procs[role] = subprocess.Popen(
                self.argv(role), env=self.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while not self._ready(role, before):
            assert self.procs[role].poll() is None, self.diagnostics()
            assert time.monotonic() < deadline, f"{role} not up in 90 s\n{self.diagnostics()}"
            time.sleep(0.1)

    def _ready(self, role: str, offset: int) -> bool:
        if role.startswith("api"):
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url(role)}/health", timeout=1).status_code == 200
            return False
        with self.log(role).open("rb") as fh:
            fh.seek(offset)
            return READY[role].encode() in fh.read()

    def kill(self, role: str) -> None:
        """SIGKILL the role's process group (an API's workers too; runners have sessions of their own)."""
        proc = self.procs.pop(role)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def cli(self, *args: str, prog: str = "tune", timeout: float = 120) -> str:
        done = subprocess.run(
            [str(BIN / prog), *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{prog} {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def runner_logs(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted((self.root / "home" / "runs").glob("*.log"))}

    def diagnostics(self) -> str:
        roles = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))
        runners = "\n".join(f"--- {n}\n{t[-3000:]}" for n, t in self.runner_logs().items())
        return f"{roles}\n{runners}"


def kill_orphans(root: Path) -> None:
    """SIGKILL the session of every job runner still working on ``root``'s bucket (a failed test's)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        runner = any(name in b" ".join(argv) for name in RUNNER_MODULES)
        if proc.name.isdigit() and runner and any(str(root).encode() in a for a in argv):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(proc.name), signal.SIGKILL)


@contextlib.contextmanager
def running_topology(
    root: Path,
    *,
    env: Mapping[str, str] | None = None,
    dispatcher_args: Sequence[str] = ("--max-concurrent", "1"),
    api1_workers: int = 2,
) -> Iterator[Topology]:
    """Every role started on a fresh fake-gcs-server bucket (module docstring); ``env``: more variables
    for the roles (and, through the dispatcher, the runners)."""
    from runners.base_models import MARKER, resolve_base_model
    from runners.workdir import upload_folder
    from storage import open_bucket
    from storage.changes import create_topic

    name = uuid.uuid4().hex[:10]
    changes = f"topo-changes-{name}"
    create_topic(PROJECT, changes)  # fake-gcs-server publishes to it from the first object on
    notify = ["-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", changes]
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    with fake_gcs_server(notify) as gcs:
        bucket_name = f"topo-{name}"
        create_gcs_bucket(gcs, bucket_name)
        os.environ["STORAGE_EMULATOR_HOST"] = gcs
        home = root / "home"
        role_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TUNE_HOME": str(home),
            "TUNE_BUCKET": f"gs://{bucket_name}",
            "STORAGE_EMULATOR_HOST": gcs,
            "TUNE_CHANGE_FEED": f"pubsub://{PROJECT}/{changes}/topo-*",
            "TUNE_CONFIG_DIR": str(root / "cli"),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        plane = Topology(
            root,
            role_env,
            f"pubsub://{PROJECT}/topo-hb-{name}/topo-hb-{name}-sub",
            dispatcher_args=dispatcher_args,
            api1_workers=api1_workers,
        )
        try:
            tiny = resolve_base_model("tiny-llama", root / "base-models")
            upload_folder(open_bucket(role_env["TUNE_BUCKET"]), tiny, "base-models/tiny-llama/", last=MARKER)
            plane.env["TUNE_API_URL"] = plane.url("api0")
            for role in ROLES:
                plane.start(role)
            yield plane
        finally:
            plane.close()
            kill_orphans(root)
            if before is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = before
