"""End to end on real processes: dispatcher -> local backend -> ``python -m runners.job_runner`` ->
``python -m runners.trainer`` on tiny-llama, with the event store on a local bucket.

- a stop request mid-run leaves the job ``stopped`` with its checkpoint in the bucket;
- a pause once it has a checkpoint: ``paused``, its processes gone, no heartbeat while paused; a
  resume runs attempt 2 from the checkpoint the pause saved, and the job succeeds with its model;
- ``kill -9`` of the trainer mid-run: the job is retried from its last checkpoint, the step
  count continues, and it succeeds, registering its model (base model, job, metrics, sha256)
  whose weights load with plain transformers + peft. Its first attempt's trainer holds at its
  first checkpoint (``tests.e2e.held_trainer``), so the kill lands mid-run by an event, never
  by outrunning the run's end.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domain.applications import UserApp
from domain.job import JobState
from runners.backends import LaunchRequest, LocalSubprocessBackend
from runners.base_models import MARKER, resolve_base_model
from runners.dispatcher import Dispatcher
from runners.workdir import MANIFEST, download_prefix, upload_folder
from storage import LocalBucket
from storage.eventstore import open_user
from storage.heartbeats import attempt_secret, verify_heartbeat
from tests.e2e.held_trainer import held_runner_argv
from tests.unit.ledger.builders import HEARTBEAT_KEY
from tests.unit.runners.builders import RecordingPublisher, now, seed_dataset, submit_job, wait_for

pytestmark = pytest.mark.slow

JOB = "users/usr_1/jobs/job_1/"
STEPS = 20
TRAIN = {
    "batch_size": 4,
    "learning_rate": 0.02,
    "lr_scheduler": "constant",
    "heartbeat_interval_seconds": 0.2,
}


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_base_model("tiny-llama", tmp_path_factory.mktemp("base-models"))


class Platform:
    """A bucket with a validated dataset, the user's app, and a dispatcher polling in a thread."""

    def __init__(
        self, root: Path, tiny_llama: Path, *, argv: Callable[[LaunchRequest], list[str]] | None = None
    ) -> None:
        self.root = root
        self.bucket = LocalBucket(root / "bucket")
        upload_folder(self.bucket, tiny_llama, "base-models/tiny-llama/", last=MARKER)
        self.app: UserApp = open_user(self.bucket, "usr_1")
        seed_dataset(self.bucket, self.app)
        self.heartbeats = RecordingPublisher()
        self.home = root / "home"
        backend = LocalSubprocessBackend(
            on_heartbeat=self.heartbeats.publish,
            log_dir=root / "runner-logs",
            env={"TUNE_HOME": str(self.home), "OMP_NUM_THREADS": "1"},
            argv=argv,
        )
        self.dispatcher = Dispatcher(
            self.bucket,
            backend,
            open_app=lambda user_id: self.app,
            poll_interval_s=0.1,
            heartbeat_key=HEARTBEAT_KEY,
        )
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.dispatcher.run, args=(self._stop,), daemon=True)
        self._loop.start()

    def start(self, **config: object) -> None:
        submit_job(self.app, **{**TRAIN, **config})
        self.dispatcher.submit("usr_1", "job_1")

    def job(self):  # type: ignore[no-untyped-def]
        return self.app.get_job("job_1")

    def wait_state(self, *states: JobState, timeout: float = 240):  # type: ignore[no-untyped-def]
        return wait_for(
            lambda: (j := self.job()).state in states and j, timeout=timeout, interval=0.2, what=states
        )

    def close(self) -> None:
        self._stop.set()
        self._loop.join(timeout=10)
        self.dispatcher.close(timeout=30)

    def assert_signed(self, attempt: int) -> None:
        """Every heartbeat of ``attempt`` verifies under its secret, which no object or log holds."""
        secret = attempt_secret(HEARTBEAT_KEY, "usr_1", "job_1", attempt)
        beats = self.heartbeats.of("job_1", attempt)
        assert beats and all(verify_heartbeat(h, secret) for h in beats)
        for name in self.bucket.list(""):
            assert secret.encode() not in self.bucket.read(name), name
        for path in (self.root / "runner-logs").glob("*.log"):
            assert secret not in path.read_text(), path

    def diagnostics(self) -> str:
        """The job's state, job.log and the runners' own logs (for failure messages)."""
        runners = "\n".join(p.read_text() for p in sorted((self.root / "runner-logs").glob("*.log")))
        try:
            text = job_log(self.bucket, 3)
        except Exception as exc:
            text = f"(no job.log: {exc})"
        return f"{self.job()}\n--- job.log\n{text}\n--- runners\n{runners}"


@pytest.fixture
def platform(tmp_path: Path, tiny_llama_dir: Path) -> Iterator[Platform]:
    p = Platform(tmp_path, tiny_llama_dir)
    yield p
    p.close()


@pytest.fixture
def held_platform(tmp_path: Path, tiny_llama_dir: Path) -> Iterator[Platform]:
    """A platform whose first attempts' trainers hold at their first checkpoint."""
    p = Platform(tmp_path, tiny_llama_dir, argv=held_runner_argv)
    yield p
    p.close()


def step_lines(bucket: LocalBucket, attempts: int = 2) -> list[tuple[int, int]]:
    """The step metrics of each attempt (``attempts/<n>/metrics.jsonl``), attempt by attempt."""
    lines = [
        line
        for n in range(1, attempts + 1)
        if bucket.exists(name := f"{JOB}attempts/{n}/metrics.jsonl")
        for line in bucket.read(name).splitlines()
    ]
    return [(m["attempt"], m["step"]) for m in map(json.loads, lines) if m["event"] == "step"]


def job_log(bucket: LocalBucket, attempts: int = 2) -> str:
    """The attempts' logs, one after the other (as the API serves them)."""
    return "".join(
        bucket.read(name).decode()
        for n in range(1, attempts + 1)
        if bucket.exists(name := f"{JOB}attempts/{n}/job.log")
    )


def test_a_stop_request_mid_run_stops_the_job_with_a_checkpoint(platform: Platform) -> None:
    platform.start(max_steps=100_000, checkpoint_every_steps=50_000)  # never reached: the stop ends it
    wait_for(lambda: platform.job().step >= 3, timeout=240, interval=0.1, what="training progress")
    platform.app.request_stop("job_1", "stopped by the user", now())

    job = platform.wait_state(JobState.STOPPED, JobState.FAILED, timeout=120)
    assert job.state == JobState.STOPPED, platform.diagnostics()
    assert job.stop_reason == "stopped by the user" and 3 <= job.step < 100_000
    assert job.last_checkpoint is not None and job.last_checkpoint.step == job.step
    checkpoint = job.last_checkpoint.path
    assert checkpoint == f"{JOB}attempts/1/checkpoints/{job.step}/"
    for name in ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt"):
        assert platform.bucket.exists(checkpoint + name), name
    assert "stopping the trainer (requested)" in job_log(platform.bucket)

    wait_for(lambda: platform.heartbeats.of("job_1", 1)[-1].final, timeout=30, what="the final heartbeat")
    beats = platform.heartbeats.of("job_1", 1)
    assert [h.seq for h in beats] == list(range(1, len(beats) + 1))
    assert beats[-1].step == job.step and beats[-1].gpu_ms_total > 0
    platform.assert_signed(1)
    # the stopped job's last checkpoint became its model (weights only), so its model id answers
    weights = list(platform.bucket.list(f"users/usr_1/models/{job.model_id}/weights/"))
    assert any(name.endswith("adapter_model.safetensors") for name in weights), weights
    assert not any(name.endswith("optimizer.pt") for name in weights), weights


def test_a_killed_trainer_is_retried_from_its_checkpoint_and_the_job_succeeds_with_its_model(
    held_platform: Platform, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    platform = held_platform
    platform.start(max_steps=STEPS, checkpoint_every_steps=5, max_retries=1)
    held = wait_for(lambda: platform.job().last_checkpoint, timeout=240, interval=0.05, what="a checkpoint")
    assert held.step == 5  # the trainer holds there until it is killed
    pid = int((platform.home / "work" / "job_1-1" / "trainer.pid").read_text())
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pytest.fail(f"the held trainer was gone before it could be killed\n{platform.diagnostics()}")

    job = platform.wait_state(JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, timeout=300)
    assert job.state == JobState.SUCCEEDED, (job.error, platform.diagnostics())
    assert job.attempt == 2 and job.step == STEPS, platform.diagnostics()

    steps = step_lines(platform.bucket)
    first_try = [s for a, s in steps if a == 1]
    second_try = [s for a, s in steps if a == 2]
    assert first_try == [1, 2, 3, 4, 5], steps
    resumed_from = second_try[0] - 1
    assert resumed_from == 5, steps
    assert second_try == list(range(resumed_from + 1, STEPS + 1)), steps
    log = job_log(platform.bucket)
    assert "killed by SIGKILL" in log and f"resuming from the checkpoint at step {resumed_from}" in log

    model = platform.app.get_model(job.model_id)
    assert (model.job_id, model.base_model, model.kind) == ("job_1", "tiny-llama", "lora")
    assert model.metrics == job.metrics and model.metrics["train_loss"] > 0
    assert model.sha256 == hashlib.sha256(platform.bucket.read(model.weights_prefix + MANIFEST)).hexdigest()

    # the runner records the success, then sends its final heartbeat as it exits
    wait_for(lambda: platform.heartbeats.of("job_1", 2)[-1].final, timeout=30, what="the final heartbeat")
    for attempt in (1, 2):
        beats = platform.heartbeats.of("job_1", attempt)
        assert [h.seq for h in beats] == list(range(1, len(beats) + 1)), attempt
        platform.assert_signed(attempt)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = tmp_path / "weights"
    download_prefix(platform.bucket, model.weights_prefix, weights)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), weights)
    lora = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # trained: LoRA B starts at zero


def test_a_paused_job_releases_its_process_sends_nothing_and_resumes_from_its_checkpoint(
    held_platform: Platform,
) -> None:
    """Issue 15: start, wait for a checkpoint, pause, see it paused with its processes gone and no
    heartbeat while paused, resume: the second attempt starts at the paused checkpoint's step and
    the job succeeds with its model."""
    platform = held_platform
    platform.start(max_steps=STEPS, checkpoint_every_steps=5, max_retries=0)
    held = wait_for(lambda: platform.job().last_checkpoint, timeout=240, interval=0.05, what="a checkpoint")
    pid = int((platform.home / "work" / "job_1-1" / "trainer.pid").read_text())
    platform.app.request_pause("job_1", now())

    job = platform.wait_state(JobState.PAUSED, JobState.FAILED, JobState.SUCCEEDED, timeout=120)
    assert job.state == JobState.PAUSED, platform.diagnostics()
    paused_at = job.step  # the checkpoint the pause saved: the held one, or the step the trainer stopped at
    assert job.last_checkpoint is not None and job.last_checkpoint.step == paused_at >= held.step
    assert job.last_checkpoint.path == f"{JOB}attempts/1/checkpoints/{paused_at}/" and job.attempt == 1
    wait_for(lambda: not platform.dispatcher.running(), timeout=30, what="the paused attempt's runner to end")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the trainer is gone: its hardware is released
    wait_for(lambda: platform.heartbeats.of("job_1", 1)[-1].final, timeout=30, what="the final heartbeat")
    sent = len(platform.heartbeats.of("job_1"))
    threading.Event().wait(3)  # a few seconds paused
    assert len(platform.heartbeats.of("job_1")) == sent  # nothing is metered while paused
    assert platform.job().state == JobState.PAUSED
    assert f"paused at step {paused_at}" in job_log(platform.bucket)

    platform.app.resume_job("job_1", now())
    platform.dispatcher.submit("usr_1", "job_1")
    job = platform.wait_state(JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, timeout=300)
    assert job.state == JobState.SUCCEEDED, (job.error, platform.diagnostics())
    assert job.attempt == 2 and job.resumed_attempts == 1 and job.step == STEPS
    steps = step_lines(platform.bucket)
    assert [s for a, s in steps if a == 2] == list(range(paused_at + 1, STEPS + 1)), steps
    assert f"from step {paused_at} on" in job_log(platform.bucket)  # the trainer's Started.start_step
    assert platform.app.get_model(job.model_id).job_id == "job_1"
