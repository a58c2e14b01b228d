"""Every key the platform writes is a name of ``storage.layout``.

A job runs end to end on a bucket that records every key written: bootstrap, a user, a
dataset uploaded over HTTP, a job started over HTTP, the real dispatcher, the real job runner
(in a thread of this process, on the fake trainer, so it writes to the same bucket object),
the ledger metering its heartbeats, the model it registers, and the projector's views. Each
key must match one of ``layout.PATTERNS``. So must every key of the bucket the code of
December 2026 wrote (``tests/fixtures/bucket-2026-12``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.services import AccountService
from domain.job import JobState
from domain.placement import Placement
from roles.bootstrap import bootstrap
from runners.attempt_spec import JobRunSpec, read_job_run
from runners.backends.base import AliveRun, LaunchRequest, RunStatus
from runners.dispatcher import Dispatcher
from runners.job_runner import JobRunner
from runners.ledger.worker import LedgerWorker
from runtime.context import Runtime
from storage import layout
from storage.bucket import ObjectStat
from storage.heartbeats import DirectTransport, HeartbeatPublisher
from storage.memory import MemoryBucket
from tests.api.conftest import chat_lines, make_settings
from tests.unit.ledger.builders import HEARTBEAT_KEY
from tests.unit.runners.builders import fake_base_model, wait_for
from tests.unit.runners.conftest import FAKE_TRAINER

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bucket-2026-12"
CONFIG = {"max_steps": 6, "checkpoint_every_steps": 3, "heartbeat_interval_seconds": 0.1, "gpu_type": "cpu"}


class RecordingBucket(MemoryBucket):
    """A MemoryBucket that keeps the name of every object written (create and upload write too)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[str] = set()
        self._names_lock = threading.Lock()

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        with self._names_lock:
            self.written.add(name)
        return super().write(name, data, if_generation_match=if_generation_match)


class ThreadBackend:
    """A launch backend that runs each job runner in a thread of this process, on the fake trainer."""

    def __init__(
        self, bucket: RecordingBucket, runtime: Runtime, publisher: HeartbeatPublisher, work: Path
    ) -> None:
        self.bucket, self.runtime, self.publisher, self.work = bucket, runtime, publisher, work
        self.runs: dict[str, tuple[JobRunner, threading.Thread]] = {}

    def offers(self) -> dict[str, int]:
        return {"cpu": 1}

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        return Placement(gpu_type=gpu_type, gpu_count=gpu_count, node="thread")

    def launch(self, request: LaunchRequest) -> Placement:
        spec = read_job_run(self.bucket, request.run_object)
        runner = JobRunner(
            self.bucket,
            spec,
            app=self.runtime.user_app(spec.user_id),
            publisher=self.publisher,
            work_root=self.work / "work",
            cache_dir=self.work / "cache",
            trainer_command=[sys.executable, str(FAKE_TRAINER)],
            heartbeat_secret=request.heartbeat_secret,
        )
        thread = threading.Thread(target=runner.run, name=request.run_id, daemon=True)
        self.runs[request.run_id] = (runner, thread)
        thread.start()
        return request.placement or self.place(request.gpu_type, request.gpu_count)

    def status(self, run_id: str) -> RunStatus:
        alive = self.runs[run_id][1].is_alive()
        return RunStatus(run_id, alive, None if alive else 0)

    def stop(self, run_id: str) -> None:
        self.runs[run_id][0].interrupt()

    def forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)

    def alive_runs(self) -> list[AliveRun]:
        return []

    def adopt(self, run: AliveRun) -> None:
        raise KeyError(run.run_id)

    def close(self, timeout: float = 30.0) -> None:
        for runner, thread in list(self.runs.values()):
            runner.interrupt()
            thread.join(timeout)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.bucket = RecordingBucket()
        settings = make_settings(tmp_path, bucket_url="file:///unused")
        self.rt = Runtime(settings, bucket=self.bucket)
        bootstrap(self.rt)
        fake_base_model(self.bucket)
        transport = DirectTransport("bucket-layout")
        self.publisher = transport.publisher()
        self.dispatcher = Dispatcher(
            self.bucket,
            ThreadBackend(self.bucket, self.rt, self.publisher, tmp_path),
            open_app=self.rt.user_app,
            clock=self.rt.clock,
            notify=self.rt.projector.notify,
            on_launch=self._watch,
            poll_interval_s=0.05,
            heartbeat_key=HEARTBEAT_KEY,
        )
        self.ledger = LedgerWorker(
            self.bucket,
            self.rt.platform,
            self.rt.user_app,
            transport.subscriber(),
            self.rt.projector,
            heartbeat_key=HEARTBEAT_KEY,
            clock=self.rt.clock,
        )
        self.rt.job_submitted.append(self.dispatcher.submit)
        self.client = TestClient(create_app(settings, runtime=self.rt))
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.dispatcher.run, args=(self._stop,), daemon=True)

    def _watch(self, spec: JobRunSpec) -> None:
        self.ledger.watch(spec.user_id, spec.job_id, spec.attempt, interval_s=spec.heartbeat_interval_s)

    def start(self) -> None:
        self.client.__enter__()
        self.ledger.start()
        self._loop.start()

    def close(self) -> None:
        self._stop.set()
        self._loop.join(10)
        self.dispatcher.close(10)
        self.publisher.close()
        self.ledger.close(10)
        self.client.__exit__(None, None, None)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.start()
    try:
        yield w
    finally:
        w.close()


def _login(world: World) -> tuple[str, dict[str, str]]:
    email, password = "ada@example.com", "correct horse battery"
    user_id = AccountService(world.rt).create_user(email, password, "user")
    reply = world.client.post("/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return user_id, {"Authorization": f"Bearer {reply.json()['token']}"}


def _post(world: World, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    reply = world.client.post(path, headers=headers, **kwargs)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_every_key_written_by_a_job_end_to_end_is_a_layout_name(world: World) -> None:
    user_id, auth = _login(world)
    dataset_id = _post(
        world,
        f"/datasets/{user_id}/upload",
        {**auth, "Content-Type": "application/octet-stream"},
        params={"filename": "chat data.jsonl"},
        content=chat_lines(),
    )["dataset_id"]
    body = {"base_model": "tiny-llama", "dataset_id": dataset_id, "config": CONFIG}
    job_id = _post(world, f"/fine-tune/{user_id}/start", auth, json=body)["job_id"]

    app = world.rt.user_app(user_id)
    wait_for(lambda: app.get_job(job_id).state in (JobState.SUCCEEDED, JobState.FAILED), timeout=60)
    job = app.get_job(job_id)
    assert job.state == JobState.SUCCEEDED, job
    wait_for(lambda: world.bucket.exists(layout.billing(user_id)), timeout=30, what="the metered usage")
    world.rt.committed(layout.user_partition(user_id))
    for complete in (layout.jobs(user_id), layout.models(user_id)):  # coalesced: within the listing interval
        wait_for(lambda name=complete: world.bucket.exists(name), timeout=30, what=complete)

    written = world.bucket.written
    refused = sorted(name for name in written if not _matches(name))
    assert not refused, f"keys outside storage.layout: {refused}"
    kinds = {layout.check_key(name) for name in written}
    assert kinds >= {
        "commit",
        "platform view",
        "user view",
        "job file",
        "attempt file",
        "checkpoint",
        "dataset file",
        "model file",
        "base model",
    }
    model_id = job.model_id
    assert {
        layout.job_config(user_id, job_id),
        layout.job_run(user_id, job_id),
        layout.job_status(user_id, job_id),
        layout.attempt_log(user_id, job_id, 1),
        layout.attempt_metrics(user_id, job_id, 1),
        layout.dataset_raw(user_id, dataset_id, "chat data.jsonl"),
        layout.dataset_processed(user_id, dataset_id),
        layout.dataset_metadata(user_id, dataset_id),
        layout.model_config(user_id, model_id),
        layout.model_metadata(user_id, model_id),
        layout.position(layout.PLATFORM),
        layout.position(layout.user_partition(user_id)),
        layout.user_info(user_id),
        layout.user_pricing(user_id),
        layout.jobs(user_id),
        layout.models(user_id),
        layout.billing(user_id),
    } <= written
    assert any(name.startswith(layout.attempt_checkpoints_prefix(user_id, job_id, 1)) for name in written)
    assert not any(name.startswith(layout.checkpoints_prefix(user_id, job_id)) for name in written)
    assert any(name.startswith(layout.weights_prefix(user_id, model_id)) for name in written)


def test_every_key_of_the_stored_bucket_of_december_2026_is_a_layout_name() -> None:
    keys = [path.relative_to(FIXTURE).as_posix() for path in FIXTURE.rglob("*") if path.is_file()]
    assert len(keys) > 50
    assert not sorted(key for key in keys if not _matches(key))


def _matches(key: str) -> bool:
    try:
        layout.check_key(key)
    except ValueError:
        return False
    return True
