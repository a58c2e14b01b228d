"""SIGKILL of `tune serve` mid-job, then a restart: the job completes once and is billed what ran.

Mid-job is an event, not a race: attempt 1's trainer holds at its first checkpoint
(``tests.e2e.held_trainer``: the server's runners are held ones), so the kill finds it running however
fast the CPU trains; attempt 2 resumes from a checkpoint and runs as is.

The runner of attempt 1 lives in a session of its own, so it survives the kill; its heartbeat
pipe breaks, so it checkpoints, stops and ends ``retrying`` ("control plane unreachable"), and
writes the heartbeats it could not deliver to its spool. The restarted server meters that spool
and runs attempt 2 from the orphan's checkpoint. Checked:

- the job succeeds exactly once (one model registered) after two attempts;
- metered GPU time (+ credited, once platform-fault credits exist) equals the GPU time the runners
  measured (their logs: "after X s of GPU time"), within one heartbeat interval;
- every object the runners wrote lies under its own attempt's prefix (none under the job's old
  single ``job.log``/``events/metrics.jsonl``/``checkpoints/``), each attempt's metrics are its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from domain.job import Job, JobState
from runners.main_job import stop_server
from storage import LocalBucket, layout
from storage.eventstore import open_user
from storage.eventstore.ledger import Ledger, configure_ledger
from tests.e2e.held_trainer import held_serve_argv
from tests.e2e.test_full_flow import FACTS, PASSWORD
from tests.e2e.test_full_flow import Platform as Cli
from tests.emulators import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

INTERVAL_S = 1.0
CONFIG = f"""\
method: lora
lora: {{r: 8, alpha: 16, dropout: 0.0}}
batch_size: 2
learning_rate: 0.02
lr_scheduler: constant
max_steps: 60
checkpoint_every_steps: 20
heartbeat_interval_seconds: {INTERVAL_S}
max_retries: 2
gpu_type: cpu
"""
GPU_TIME = re.compile(r"after ([0-9.]+) s of GPU time")


class Server:
    """`tune serve` on one home and port, started and SIGKILLed at will."""

    def __init__(self, home: Path, port: int) -> None:
        self.cli = Cli(home, port)
        self.home, self.port = home, port
        self.hold = home / "hold"  # while it exists, a first attempt's trainer holds at its first checkpoint
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.home / "serve.log").open("a")
        self.hold.touch()
        self.proc = subprocess.Popen(
            held_serve_argv(self.hold, "serve", "--port", str(self.port)),
            env={**self.cli.env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.cli.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, (self.home / "serve.log").read_text()
            assert time.monotonic() < deadline, "tune serve did not come up"
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server process alone (its runners, in sessions of their own, live on)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_server(self.proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    home.mkdir()
    srv = Server(home, free_port())
    srv.start()
    try:
        srv.cli.cli("tune", "admin", "user", "create", "--email", "ada@example.com", "--password", PASSWORD)
        srv.cli.cli("tune", "login", "--email", "ada@example.com", "--password", PASSWORD)
        yield srv
    finally:
        srv.close()


def test_a_killed_control_plane_runs_the_job_once_and_bills_what_ran(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "facts.jsonl"
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records * 4))
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)
    cli = server.cli
    cli.cli("dataset", "upload", "--file", str(data))
    dataset = cli.json("dataset", "list")
    dataset_id = (dataset if isinstance(dataset, list) else dataset["datasets"])[0]["dataset_id"]
    cli.cli("tune", "start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", str(config))
    jobs = cli.json("tune", "list")
    job_id = (jobs if isinstance(jobs, list) else jobs["jobs"])[0]["job_id"]

    bucket = LocalBucket(server.home / "bucket")
    configure_ledger(bucket, Ledger(bucket, server.home))  # read as the server does: its root's keyring
    users = (server.home / "bucket" / "users").iterdir()
    (user_id,) = [p.name for p in users if (p / "jobs" / job_id).exists()]
    app = open_user(bucket, user_id)

    def job():  # type: ignore[no-untyped-def]
        return app.get_job(job_id)

    deadline = time.monotonic() + 240
    while job().last_checkpoint is None:  # mid-job: held at its first checkpoint
        assert job().state not in (JobState.SUCCEEDED, JobState.FAILED), job()
        assert time.monotonic() < deadline, f"no progress: {job()}"
        time.sleep(0.2)
    server.kill()
    server.start()

    deadline = time.monotonic() + 300
    while job().state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED):
        assert time.monotonic() < deadline, f"not done: {job()}\n{(server.home / 'serve.log').read_text()}"
        time.sleep(0.5)
    done = job()
    logs = {
        n: bucket.read(layout.attempt_log(user_id, job_id, n)).decode() for n in range(1, done.attempt + 1)
    }
    assert done.state == JobState.SUCCEEDED, (done, logs)
    assert done.attempt == 2, (done, logs)
    assert "control plane unreachable" in logs[1], logs[1]

    # once: one success, one model
    events = list(app.events.get(Job.create_id(job_id)))
    assert sum(isinstance(e, Job.Succeeded) for e in events) == 1
    models = cli.json("model", "list")
    assert len(models if isinstance(models, list) else models["models"]) == 1

    # billed what ran: the runners' measured GPU time, within one interval (credits: none yet)
    measured_s = sum(float(GPU_TIME.search(text).group(1)) for text in logs.values())  # type: ignore[union-attr]
    metered_ms = sum(e.gpu_ms for e in events if isinstance(e, Job.UsageMetered))
    assert abs(metered_ms - measured_s * 1000) <= INTERVAL_S * 1000, (metered_ms, measured_s, logs)

    # no object written by two attempts: the runners wrote under their attempts' prefixes only
    job_prefix = layout.job_prefix(user_id, job_id)
    written = [n[len(job_prefix) :] for n in bucket.list(job_prefix)]
    assert not [n for n in written if n.startswith(("checkpoints/", "events/")) or n == "job.log"], written
    for n in (1, 2):
        metrics = bucket.read(layout.attempt_metrics(user_id, job_id, n)).splitlines()
        assert metrics and {json.loads(line)["attempt"] for line in metrics} == {n}
    assert done.last_checkpoint is None or done.last_checkpoint.path.startswith(f"{job_prefix}attempts/")
    assert bucket.exists(layout.unsent_heartbeats(user_id, job_id, 1))  # the orphan's undelivered ones
