"""The multi-process topology (issue 13), all real parts, each role its own OS process.

fake-gcs-server is the bucket and publishes its object notifications to Google's Pub/Sub emulator;
two API processes (``tune run api``, the second with two workers), a projector, a ledger and a
dispatcher (``tune run ...``) each follow them on a subscription of their own
(``TUNE_CHANGE_FEED=pubsub://.../topo-*``). Runners run on the local backend (children of the
dispatcher in sessions of their own; a local Ray head is what ``test_ray_backend`` covers: its start
and a Ray job's overhead would more than double this test's time on two cores) and publish their
heartbeats to Pub/Sub themselves. A tiny-llama job goes end to end through the CLIs; while it
trains, each role in turn is SIGKILLed and started again. Then:

- the job succeeds exactly once, in one attempt: the restarted dispatcher adopted the runner that
  survived it (one run launched, one ``Started``, one model);
- metered GPU time equals the GPU time the runner measured (its log: "after X s of GPU time"),
  within one heartbeat interval, and the status view's cost is that time at the CPU price;
- every API process's status view shows the last commit (succeeded, all the metered time) within
  2 s of it;
- a suspension made with ``tune admin user suspend`` takes effect in both API processes within 2 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_control_plane_crash_pubsub import kill_orphans
from tests.emulators import create_gcs_bucket, fake_gcs_server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.gcs, pytest.mark.pubsub]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROJECT = "test-project"
PASSWORD = "pw-long-enough-1"
INTERVAL_S = 1.0
CONFIG = f"""\
method: lora
lora: {{r: 8, alpha: 16, dropout: 0.0}}
batch_size: 2
learning_rate: 0.02
lr_scheduler: constant
max_steps: 1200
checkpoint_every_steps: 1000
heartbeat_interval_seconds: {INTERVAL_S}
gpu_type: cpu
"""
GPU_TIME = re.compile(r"after ([0-9.]+) s of GPU time")
READY = {"projector": "projector:", "ledger": "ledger:", "dispatcher": "dispatcher ("}


class Topology:
    """The roles as separate processes on one bucket and one home (one host)."""

    def __init__(self, root: Path, env: dict[str, str], heartbeats: str) -> None:
        self.root, self.env, self.heartbeats = root, env, heartbeats
        self.ports = {"api0": free_port(), "api1": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.ports[api]}"

    def argv(self, role: str) -> list[str]:
        tune = [str(BIN / "tune"), "run"]
        if role.startswith("api"):
            workers = "1" if role == "api0" else "2"
            return [*tune, "api", "--port", str(self.ports[role]), "--workers", workers]
        if role == "ledger":
            return [*tune, "ledger", "--heartbeats", self.heartbeats, "--create"]
        if role == "dispatcher":
            return [*tune, "dispatcher", "--heartbeats", self.heartbeats, "--max-concurrent", "1"]
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


@pytest.fixture
def topology(pubsub_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Topology]:
    from runners.base_models import MARKER, resolve_base_model
    from runners.workdir import upload_folder
    from storage import open_bucket
    from storage.changes import create_topic

    name = uuid.uuid4().hex[:10]
    changes = f"topo-changes-{name}"
    create_topic(PROJECT, changes)  # fake-gcs-server publishes to it from the first object on
    notify = ["-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", changes]
    with fake_gcs_server(notify) as gcs:
        bucket_name = f"topo-{name}"
        create_gcs_bucket(gcs, bucket_name)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
        home = tmp_path / "home"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TUNE_HOME": str(home),
            "TUNE_BUCKET": f"gs://{bucket_name}",
            "STORAGE_EMULATOR_HOST": gcs,
            "TUNE_CHANGE_FEED": f"pubsub://{PROJECT}/{changes}/topo-*",
            "TUNE_CONFIG_DIR": str(tmp_path / "cli"),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
        tiny = resolve_base_model("tiny-llama", tmp_path / "base-models")
        upload_folder(open_bucket(env["TUNE_BUCKET"]), tiny, "base-models/tiny-llama/", last=MARKER)
        plane = Topology(tmp_path, env, f"pubsub://{PROJECT}/topo-hb-{name}/topo-hb-{name}-sub")
        plane.env["TUNE_API_URL"] = plane.url("api0")
        try:
            for role in ("api0", "api1", "projector", "ledger", "dispatcher"):
                plane.start(role)
            yield plane
        finally:
            plane.close()
            kill_orphans(tmp_path)


def _status(plane: Topology, api: str, job_id: str, token: str) -> dict:
    reply = httpx.get(
        f"{plane.url(api)}/fine-tune/{job_id}/status",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_a_job_survives_each_role_killed_in_turn_and_every_api_process_follows(
    topology: Topology, tmp_path: Path
) -> None:
    from domain.job import Job, JobState
    from domain.model import Model
    from storage import open_bucket
    from storage.eventstore import open_user
    from storage.eventstore.ledger import Ledger, configure_ledger

    plane = topology
    plane.cli("admin", "user", "create", "--email", "ada@example.com", "--password", PASSWORD)
    plane.cli("login", "--email", "ada@example.com", "--password", PASSWORD)
    token = httpx.post(
        f"{plane.url('api1')}/auth/login", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10
    ).json()
    user_id, token = token["user_id"], token["token"]
    data = tmp_path / "facts.jsonl"
    line = {
        "messages": [{"role": "user", "content": "The word?"}, {"role": "assistant", "content": "Marzipan."}]
    }
    data.write_text((json.dumps(line) + "\n") * 12)
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)
    plane.cli("upload", "--file", str(data), prog="dataset")
    datasets = json.loads(plane.cli("list", "--json", prog="dataset"))
    dataset_id = (datasets if isinstance(datasets, list) else datasets["datasets"])[0]["dataset_id"]
    plane.cli("start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", str(config))
    jobs = json.loads(plane.cli("list", "--json"))
    job_id = (jobs if isinstance(jobs, list) else jobs["jobs"])[0]["job_id"]

    bucket = open_bucket(plane.env["TUNE_BUCKET"])
    configure_ledger(bucket, Ledger(bucket, tmp_path / "home"))
    app = open_user(bucket, user_id)

    def job():  # type: ignore[no-untyped-def]
        return app.get_job(job_id)

    # SIGKILL each role in turn while the job trains, and start it again
    deadline = time.monotonic() + 300
    while job().step < 5:  # mid-job: training
        assert job().state not in (JobState.SUCCEEDED, JobState.FAILED), plane.diagnostics()
        assert time.monotonic() < deadline, f"no progress\n{plane.diagnostics()}"
        time.sleep(0.5)
    for role in ("api0", "projector", "ledger", "dispatcher"):
        assert job().state == JobState.RUNNING, (role, job(), plane.diagnostics())
        plane.kill(role)
        time.sleep(INTERVAL_S)
        plane.start(role)
    assert "1 run(s) adopted" in plane.log("dispatcher").read_text(), plane.diagnostics()

    while job().state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED):
        assert time.monotonic() < deadline + 300, f"not done\n{plane.diagnostics()}"
        time.sleep(0.5)
    finished = job()
    assert finished.state == JobState.SUCCEEDED, plane.diagnostics()

    # once: one attempt (the survivor adopted, nothing launched again), one success, one model
    events = list(app.events.get(Job.create_id(job_id)))
    assert finished.attempt == 1 and sum(isinstance(e, Job.Started) for e in events) == 1, plane.diagnostics()
    assert sum(isinstance(e, Job.Succeeded) for e in events) == 1
    assert len(plane.runner_logs()) == 1, list(plane.runner_logs())
    model_events = list(app.events.get(Model.create_id(finished.model_id)))
    assert sum(isinstance(e, Model.Registered) for e in model_events) == 1

    # billed what ran: metered = the runner's measured GPU time, within one heartbeat interval
    [runner_log] = plane.runner_logs().values()
    measured_ms = float(GPU_TIME.search(runner_log).group(1)) * 1000  # type: ignore[union-attr]
    while True:
        events = list(app.events.get(Job.create_id(job_id)))
        metered_ms = sum(e.gpu_ms for e in events if isinstance(e, Job.UsageMetered))
        if abs(metered_ms - measured_ms) <= INTERVAL_S * 1000:
            break
        assert time.monotonic() < deadline + 400, (metered_ms, measured_ms, plane.diagnostics())
        time.sleep(0.2)
    last_seen = time.monotonic()  # the last commit was made at most one look (0.2 s) before

    # every API process's view reaches that last commit within 2 s, with the metered time and its cost
    for api in ("api0", "api1"):
        while True:
            status = [_status(plane, api, job_id, token) for _ in range(3)]  # api1's workers alike
            if all(s["status"] == "succeeded" and s["gpu_metrics"]["gpu_ms"] == metered_ms for s in status):
                break
            assert time.monotonic() - last_seen < 2.0, (api, status[-1], metered_ms)
            time.sleep(0.05)
    cost = status[0]["cost_usd_micros"]
    print(f"\nmeasured={measured_ms:.0f} ms metered={metered_ms} ms cost={cost} micro-USD")

    # a suspension with the admin CLI takes effect in both API processes within 2 s
    plane.cli("admin", "user", "suspend", "--user-id", user_id, "--reason", "abuse")
    suspended = time.monotonic()
    for api in ("api0", "api1"):
        while True:
            codes = {
                httpx.get(
                    f"{plane.url(api)}/fine-tune/{job_id}/status",
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code
                for _ in range(4)
            }
            if codes <= {401, 403}:
                break
            assert time.monotonic() - suspended < 2.0, (api, codes)
            time.sleep(0.05)
