"""SIGKILL of the control plane mid-job, then a restart, with the runner publishing to Pub/Sub.

The control plane is one child process (the driver below): a dispatcher (local-subprocess
backend, its ``heartbeat_url`` a topic on Google's Pub/Sub emulator, written into run.yaml), a
ledger subscribed to that topic and a projector. Its runner lives in a session of its own, so it
survives the kill and keeps publishing; the heartbeats wait in the subscription. The restarted
ledger meters them and adopts the attempt (``LedgerWorker.recover``), so the runner, whose
metering moves again well before it would take the control plane for gone, trains on; if it had
given up, the job would be retried once. Either way, checked as over stdout
(``test_control_plane_crash``):

- the job succeeds exactly once, one model registered;
- metered GPU time (charged, of which credited is a part) equals the GPU time the runners
  measured (their logs: "after X s of GPU time"), within one heartbeat interval;
- every object the runners wrote lies under its own attempt's prefix, each attempt's metrics are
  its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.job import Job, JobState
from domain.model import Model
from runners.base_models import MARKER, resolve_base_model
from runners.workdir import upload_folder
from storage import LocalBucket, layout
from storage.eventstore import open_platform, open_user
from storage.eventstore.ledger import Ledger, configure_ledger
from storage.heartbeats import open_heartbeat_transport
from tests.topology import kill_orphans
from tests.unit.runners.builders import seed_dataset, submit_job

pytestmark = [pytest.mark.slow, pytest.mark.pubsub]

ROOT = Path(__file__).resolve().parents[2]
USER, JOB = "usr_1", "job_1"
INTERVAL_S = 1.0
TRAIN = {
    "method": "lora",
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    "batch_size": 2,
    "learning_rate": 0.02,
    "lr_scheduler": "constant",
    "max_steps": 400,
    "checkpoint_every_steps": 1000,
    "heartbeat_interval_seconds": INTERVAL_S,
    "max_retries": 2,
    "gpu_type": "cpu",
}
CPU_PRICE = 1_000_000
"""Micro-dollars per CPU-hour."""
GPU_TIME = re.compile(r"after ([0-9.]+) s of GPU time")

DRIVER = """\
import signal, sys, threading
from pathlib import Path

from domain.job_states import WAITING_STATES
from projections.projector import Projector
from runners.backends import LocalSubprocessBackend
from runners.dispatcher import Dispatcher
from runners.ledger import LedgerWorker
from storage import LocalBucket, layout
from storage.eventstore.apps import PartitionApps
from storage.eventstore.ledger import Ledger, configure_ledger
from storage.heartbeats import open_heartbeat_transport

root, url, key, user, job = Path(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4], sys.argv[5]
bucket = LocalBucket(root / "bucket")
configure_ledger(bucket, Ledger(bucket, root / "home"))
apps = PartitionApps(bucket)
projector = Projector(bucket, apps)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
projector.catch_up(layout.PLATFORM)
projector.catch_up(layout.user_partition(user))
projector.start(stop)
backend = LocalSubprocessBackend(
    log_dir=root / "runner-logs", env={"TUNE_HOME": str(root / "home"), "OMP_NUM_THREADS": "1"}
)
dispatcher = Dispatcher(
    bucket, backend, open_app=apps.user, poll_interval_s=0.1, heartbeat_key=key, heartbeat_url=url,
    notify=projector.notify,
    on_launch=lambda spec: ledger.watch(
        spec.user_id, spec.job_id, spec.attempt, interval_s=spec.heartbeat_interval_s
    ),
)
ledger = LedgerWorker(
    bucket, apps.platform(), apps.user, open_heartbeat_transport(url).subscriber(), projector,
    heartbeat_key=key, on_retry=dispatcher.submit,
)
watched = ledger.recover()
if apps.user(user).get_job(job).state in WAITING_STATES:
    dispatcher.submit(user, job)
ledger.start()
print(f"control plane up: {watched} running job(s) watched", flush=True)
dispatcher.run(stop)
dispatcher.close(timeout=30)
ledger.close()
"""


class ControlPlane:
    """The driver above in a child process of its own, started and SIGKILLed at will."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.script = root / "control_plane.py"
        self.script.write_text(DRIVER)
        self.log = root / "control-plane.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNE_HOME": str(self.root / "home")}
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.script), str(self.root), self.url, HEARTBEAT_KEY, USER, JOB],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while b"control plane up" not in self.log.read_bytes().split(b"--- restart")[-1]:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"the control plane did not come up\n{self.log.read_text()}"
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the control plane alone (its runners, in sessions of their own, live on)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        with self.log.open("ab") as sink:
            sink.write(b"\n--- restart\n")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


HEARTBEAT_KEY = "test-platform-heartbeat-key"


@pytest.fixture
def control_plane(pubsub_emulator: str, tmp_path: Path) -> Iterator[ControlPlane]:
    """A bucket with tiny-llama, a dataset, a CPU price and a submitted job; the control plane on it."""
    name = f"crash-{uuid.uuid4().hex[:12]}"
    url = f"pubsub://test-project/{name}/{name}-sub"
    open_heartbeat_transport(url, create=True)  # the topic and its subscription outlive the control plane
    bucket = LocalBucket(tmp_path / "bucket")
    configure_ledger(bucket, Ledger(bucket, tmp_path / "home"))  # the control plane's root key
    tiny = resolve_base_model("tiny-llama", tmp_path / "base-models")
    upload_folder(bucket, tiny, "base-models/tiny-llama/", last=MARKER)
    now = datetime.now(UTC)
    platform = open_platform(bucket)
    platform.set_price("cpu", CPU_PRICE, now, now)
    platform.register_user("ada@example.com", "hash", "user", now, user_id=USER)  # in the views: watched
    app = open_user(bucket, USER)
    seed_dataset(bucket, app)
    submit_job(app, job_id=JOB, **TRAIN)
    plane = ControlPlane(tmp_path, url)
    plane.start()
    try:
        yield plane
    finally:
        plane.close()
        kill_orphans(tmp_path)


def test_over_pubsub_a_killed_control_plane_runs_the_job_once_and_bills_what_ran(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    configure_ledger(bucket, Ledger(bucket, tmp_path / "home"))
    app = open_user(bucket, USER)

    def job():  # type: ignore[no-untyped-def]
        return app.get_job(JOB)

    def diagnostics() -> str:
        runners = "\n".join(p.read_text() for p in sorted((tmp_path / "runner-logs").glob("*.log")))
        return f"{job()}\n--- control plane\n{control_plane.log.read_text()}\n--- runners\n{runners}"

    deadline = time.monotonic() + 240
    while job().step < 10:  # mid-job: training for a while
        assert job().state not in (JobState.SUCCEEDED, JobState.FAILED), diagnostics()
        assert time.monotonic() < deadline, f"no progress\n{diagnostics()}"
        time.sleep(0.2)
    control_plane.kill()
    time.sleep(2 * INTERVAL_S)  # the runner publishes on, nobody reads
    control_plane.start()

    deadline = time.monotonic() + 300
    while job().state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED):
        assert time.monotonic() < deadline, f"not done\n{diagnostics()}"
        time.sleep(0.5)
    done = job()
    logs = {n: bucket.read(layout.attempt_log(USER, JOB, n)).decode() for n in range(1, done.attempt + 1)}
    assert done.state == JobState.SUCCEEDED, (diagnostics(), logs)
    # adopted (one attempt), or the runner gave up and the job was retried once
    assert done.attempt in (1, 2), (done, logs)
    if done.attempt == 2:
        assert "control plane unreachable" in logs[1], logs[1]

    # once: one success, one model
    events = list(app.events.get(Job.create_id(JOB)))
    assert sum(isinstance(e, Job.Succeeded) for e in events) == 1
    assert sum(isinstance(e, Job.Started) for e in events) == done.attempt
    model_events = list(app.events.get(Model.create_id(f"model_{JOB}")))
    assert sum(isinstance(e, Model.Registered) for e in model_events) == 1, model_events
    assert app.get_model(f"model_{JOB}").job_id == JOB

    # billed what ran: metered (charged; credited is a part of it) = the runners' measured GPU time,
    # within one interval; the final heartbeat of every attempt was metered
    measured_s = sum(float(GPU_TIME.search(text).group(1)) for text in logs.values())  # type: ignore[union-attr]
    deadline = time.monotonic() + 90  # a killed ledger's lease holds the job's heartbeats back
    while True:
        events = list(app.events.get(Job.create_id(JOB)))
        metered_ms = sum(e.gpu_ms for e in events if isinstance(e, Job.UsageMetered))
        if abs(metered_ms - measured_s * 1000) <= INTERVAL_S * 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    credited_ms = sum(e.gpu_ms for e in events if isinstance(e, Job.UsageCredited))
    print(
        f"\nattempts={done.attempt} measured={measured_s} s metered={metered_ms} ms credited={credited_ms} ms"
    )
    assert abs(metered_ms - measured_s * 1000) <= INTERVAL_S * 1000, (metered_ms, measured_s, logs)
    assert 0 <= credited_ms <= metered_ms
    assert {e.gpu_type for e in events if isinstance(e, Job.UsageMetered)} == {"cpu"}

    # no object written by two attempts: the runners wrote under their attempts' prefixes only
    job_prefix = layout.job_prefix(USER, JOB)
    written = [n[len(job_prefix) :] for n in bucket.list(job_prefix)]
    assert not [n for n in written if n.startswith(("checkpoints/", "events/")) or n == "job.log"], written
    for n in range(1, done.attempt + 1):
        metrics = bucket.read(layout.attempt_metrics(USER, JOB, n)).splitlines()
        assert metrics and {json.loads(line)["attempt"] for line in metrics} == {n}
    assert done.last_checkpoint is None or done.last_checkpoint.path.startswith(f"{job_prefix}attempts/")
