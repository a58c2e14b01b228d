"""tiny-llama end to end through the Ray backend: a real local Ray head, Google's Pub/Sub emulator.

The dispatcher submits each attempt as a Ray job (``RayJobsBackend``); the runner publishes its
heartbeats to a Pub/Sub topic itself (a Ray job's stdout reaches no one), where a ledger meters
them. Checked:

- a job succeeds, and its metered GPU time is the time the runner measured (within one interval);
- a stop through Ray (``stop_job``: SIGTERM, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``, set
  per job above the checkpoint time) lets the runner checkpoint first: the attempt ends with a
  checkpoint at the step it reached and the runner's exit status 0, not a kill (with no retries
  left the job ends ``stopped``; with some, ``retrying`` from that checkpoint).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.job import Job, JobState
from projections.projector import Projector
from runners.backends import RayJobsBackend
from runners.backends.ray_entry import EXIT_MARKER
from runners.base_models import MARKER, resolve_base_model
from runners.dispatcher import Dispatcher
from runners.ledger import LedgerWorker
from runners.workdir import upload_folder
from storage import LocalBucket, layout
from storage.eventstore.apps import PartitionApps
from storage.eventstore.ledger import Ledger, configure_ledger
from storage.heartbeats import open_heartbeat_transport
from tests.unit.runners.builders import seed_dataset, submit_job, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.pubsub, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
USER = "usr_1"
INTERVAL_S = 1.0
KEY = b"test-platform-heartbeat-key"
TRAIN = {
    "method": "lora",
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    "batch_size": 2,
    "learning_rate": 0.02,
    "lr_scheduler": "constant",
    "checkpoint_every_steps": 1000,
    "heartbeat_interval_seconds": INTERVAL_S,
    "max_retries": 0,
    "gpu_type": "cpu",
}
GPU_TIME = re.compile(r"after ([0-9.]+) s of GPU time")


class Plane:
    """A dispatcher on the Ray backend and a ledger on the Pub/Sub topic, in this process."""

    def __init__(self, root: Path, ray_url: str, heartbeats: str) -> None:
        self.bucket = LocalBucket(root / "bucket")
        configure_ledger(self.bucket, Ledger(self.bucket, root / "home"))
        self.apps = PartitionApps(self.bucket)
        self.projector = Projector(self.bucket, self.apps)
        env = {
            "TUNE_HOME": str(root / "home"),
            "PYTHONPATH": str(ROOT),
            "PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"],
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.backend = RayJobsBackend(ray_url, env=env, cwd=ROOT, stop_wait_s=120, log_dir=root / "runs")
        self.dispatcher = Dispatcher(
            self.bucket,
            self.backend,
            open_app=self.apps.user,
            poll_interval_s=0.2,
            heartbeat_key=KEY,
            heartbeat_url=heartbeats,
            notify=self.projector.notify,
            on_launch=lambda s: self.ledger.watch(
                s.user_id, s.job_id, s.attempt, interval_s=s.heartbeat_interval_s
            ),
        )
        self.ledger = LedgerWorker(
            self.bucket,
            self.apps.platform(),
            self.apps.user,
            open_heartbeat_transport(heartbeats).subscriber(),
            self.projector,
            heartbeat_key=KEY,
            on_retry=self.dispatcher.submit,
        )

    def job(self, job_id: str):  # type: ignore[no-untyped-def]
        return self.apps.user(USER).get_job(job_id)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.backend.log_dir.glob("*.log")))  # type: ignore[union-attr]


@pytest.fixture
def plane(ray_head: str, pubsub_emulator: str, tmp_path: Path) -> Iterator[Plane]:
    name = f"ray-{uuid.uuid4().hex[:12]}"
    heartbeats = f"pubsub://test-project/{name}/{name}-sub"
    open_heartbeat_transport(heartbeats, create=True)
    plane = Plane(tmp_path, ray_head, heartbeats)
    tiny = resolve_base_model("tiny-llama", tmp_path / "base-models")
    upload_folder(plane.bucket, tiny, "base-models/tiny-llama/", last=MARKER)
    now = datetime.now(UTC)
    platform = plane.apps.platform()
    platform.set_price("cpu", 1_000_000, now, now)
    platform.register_user("ada@example.com", "hash", "user", now, user_id=USER)
    seed_dataset(plane.bucket, plane.apps.user(USER))
    plane.ledger.start()
    try:
        yield plane
    finally:
        plane.dispatcher.close(timeout=10)
        plane.ledger.close()


def _until(plane: Plane, job_id: str, states: set[JobState], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while plane.job(job_id).state not in states:
        plane.dispatcher.poll()
        assert time.monotonic() < deadline, f"{plane.job(job_id)}\n{plane.logs()}"
        time.sleep(0.2)
    plane.dispatcher.poll()  # reap the run


def test_a_job_on_ray_succeeds_metered_by_its_pubsub_heartbeats_and_a_ray_stop_checkpoints_first(
    plane: Plane,
) -> None:
    app = plane.apps.user(USER)
    submit_job(app, job_id="job_ok", **TRAIN, max_steps=8)
    plane.dispatcher.submit(USER, "job_ok")
    _until(plane, "job_ok", {JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})
    done = plane.job("job_ok")
    assert done.state == JobState.SUCCEEDED, plane.logs()
    assert done.placement["node"] in {n.node_id for n in plane.backend.nodes()}  # placed by Ray's node id
    measured_s = float(GPU_TIME.search(plane.bucket.read(layout.attempt_log(USER, "job_ok", 1)).decode())[1])  # type: ignore[index]

    def metered_ms() -> int:
        return sum(
            e.gpu_ms for e in app.events.get(Job.create_id("job_ok")) if isinstance(e, Job.UsageMetered)
        )

    wait_for(lambda: abs(metered_ms() - measured_s * 1000) <= INTERVAL_S * 1000, timeout=60, what="metering")
    assert metered_ms() > 0

    submit_job(app, job_id="job_stop", **TRAIN, max_steps=100_000)  # never reached: the stop ends it
    plane.dispatcher.submit(USER, "job_stop")
    deadline = time.monotonic() + 240
    while plane.job("job_stop").step < 3:
        plane.dispatcher.poll()
        assert plane.job("job_stop").state not in (JobState.FAILED, JobState.SUCCEEDED), plane.logs()
        assert time.monotonic() < deadline, plane.logs()
        time.sleep(0.2)
    [run_id] = plane.dispatcher.running().values()
    plane.dispatcher.close(timeout=10)  # Ray's stop_job: SIGTERM now, SIGKILL only after 120 s
    stopped = plane.job("job_stop")
    assert stopped.state == JobState.STOPPED, (
        stopped,
        plane.logs(),
    )  # interrupted, no retries left: not lost
    assert stopped.last_checkpoint is not None and stopped.last_checkpoint.step >= 3, plane.logs()
    log = (plane.backend.log_dir / f"{run_id}.log").read_text()  # type: ignore[operator]
    assert f"{EXIT_MARKER}0" in log, log
