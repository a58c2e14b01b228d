"""The job runner on the fake trainer: outcomes, events, uploads, heartbeats, stop, retry."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from domain.applications import UserApp
from domain.base_models import BaseModelSource
from domain.job import Job, JobState
from runners.job_runner import JobRunner, Outcome
from runners.workdir import MANIFEST
from storage import LocalBucket
from tests.unit.runners.builders import RecordingPublisher, now, seed_dataset, submit_job, wait_for
from tests.unit.runners.conftest import JOB_CONFIG

JOB = "users/usr_1/jobs/job_1/"
ATTEMPT = JOB + "attempts/1/"


def metric_lines(bucket: LocalBucket, attempts: int = 1) -> list[dict]:
    """Each attempt's ``attempts/<n>/metrics.jsonl``, attempt by attempt."""
    return [
        json.loads(line)
        for n in range(1, attempts + 1)
        for line in bucket.read(f"{JOB}attempts/{n}/metrics.jsonl").splitlines()
    ]


def job_log(bucket: LocalBucket, attempt: int = 1) -> str:
    return bucket.read(f"{JOB}attempts/{attempt}/job.log").decode()


@pytest.fixture
def slow_runner(queued_job, make_runner, monkeypatch) -> JobRunner:
    """A runner of a 200-step ``job_1`` on a fake trainer slow enough (0.1 s a step) to act on mid-run."""
    monkeypatch.setenv("FAKE_STEP_S", "0.1")
    queued_job(max_steps=200)
    return make_runner()


def once_training(app: UserApp, act: Callable[[], object]) -> None:
    """Call ``act`` on a thread as soon as ``job_1`` has reported step 2."""

    def wait_then_act() -> None:
        wait_for(lambda: app.get_job("job_1").step >= 2, what="progress")
        act()

    threading.Thread(target=wait_then_act, daemon=True).start()


def test_success_uploads_weights_registers_the_model_and_reports_everything(
    queued_job, make_runner, app: UserApp, local_bucket: LocalBucket, publisher: RecordingPublisher
) -> None:
    queued_job()
    assert make_runner().run() is Outcome.SUCCEEDED

    job = app.get_job("job_1")
    assert (job.state, job.step, job.total_steps, job.tokens) == (JobState.SUCCEEDED, 10, 10, 1000)
    assert job.metrics == {"train_loss": 1.5, "steps": 10.0}
    assert job.last_checkpoint is not None and job.last_checkpoint.step == 9
    assert job.last_checkpoint.path == ATTEMPT + "checkpoints/9/"
    assert local_bucket.exists(ATTEMPT + "checkpoints/9/trainer_state.json")
    kept = {name.split("/")[7] for name in local_bucket.list(ATTEMPT + "checkpoints/")}
    assert kept == {"6", "9"}  # the two latest stay
    assert not list(local_bucket.list(JOB + "checkpoints/")) and not local_bucket.exists(JOB + "job.log")

    model = app.get_model("model_job_1")
    assert (model.job_id, model.base_model, model.kind) == ("job_1", "tiny-llama", "lora")
    assert model.metrics == job.metrics
    weights = "users/usr_1/models/model_job_1/weights/"
    assert model.weights_prefix == weights
    manifest = local_bucket.read(weights + MANIFEST)
    assert model.sha256 == hashlib.sha256(manifest).hexdigest()
    listed = {}
    for line in manifest.decode().splitlines():
        digest, name = line.split("  ")
        listed[name] = digest
    assert set(listed) == {"adapter_config.json", "adapter_model.safetensors"}
    for name, digest in listed.items():
        assert hashlib.sha256(local_bucket.read(weights + name)).hexdigest() == digest
    assert model.size_bytes == sum(len(local_bucket.read(weights + n)) for n in listed)
    config = json.loads(local_bucket.read("users/usr_1/models/model_job_1/config.json"))
    assert config["base_model"] == "tiny-llama" and config["sha256"] == model.sha256
    assert config["training_config"]["max_steps"] == 10

    steps = [m for m in metric_lines(local_bucket) if m["event"] == "step"]
    assert [m["step"] for m in steps] == list(range(1, 11)) and {m["attempt"] for m in steps} == {1}
    log = job_log(local_bucket)
    assert "step 10/10" in log and "succeeded: model model_job_1" in log
    # issue 14: the manifest's digest is labelled as `model show` labels it, never as the download's sha256
    assert f"weights_sha256 {model.sha256}" in log and f"sha256 {model.sha256}" not in log.replace(
        f"weights_sha256 {model.sha256}", ""
    )
    assert "model show --model-id model_job_1" in log

    beats = publisher.of("job_1")
    assert [h.seq for h in beats] == list(range(1, len(beats) + 1))
    assert beats[-1].final and not any(h.final for h in beats[:-1])
    assert (beats[-1].step, beats[-1].tokens, beats[-1].gpu_type, beats[-1].gpu_count) == (10, 1000, "cpu", 1)
    assert beats[-1].gpu_ms_total > 0  # the final heartbeat carries the attempt's whole GPU time


def test_a_stop_request_stops_the_trainer_with_a_checkpoint(
    slow_runner: JobRunner, app: UserApp, local_bucket: LocalBucket, publisher: RecordingPublisher
) -> None:
    once_training(app, lambda: app.request_stop("job_1", "stopped by the user", now()))
    assert slow_runner.run() is Outcome.STOPPED

    job = app.get_job("job_1")
    assert job.state == JobState.STOPPED and job.stop_reason == "stopped by the user"
    assert 2 <= job.step < 200
    assert job.last_checkpoint is not None and job.last_checkpoint.step == job.step
    assert local_bucket.exists(f"{ATTEMPT}checkpoints/{job.step}/trainer_state.json")
    assert publisher.of("job_1")[-1].final
    assert not app.get_job("job_1").metrics


def test_a_stopped_job_publishes_its_last_checkpoint_as_its_model(
    slow_runner: JobRunner, app: UserApp, local_bucket: LocalBucket
) -> None:
    """Issue 14: a stopped job's model id answers. Its last checkpoint, less what only resuming needs
    (optimizer, trainer state), is its model; the adapter names the catalogue base, not a work folder."""
    once_training(app, lambda: app.request_stop("job_1", "stopped by the user", now()))
    assert slow_runner.run() is Outcome.STOPPED
    job = app.get_job("job_1")
    model = app.get_model("model_job_1")
    weights = "users/usr_1/models/model_job_1/weights/"
    assert (model.job_id, model.weights_prefix, model.kind) == ("job_1", weights, "lora")
    assert model.metrics["steps"] == job.step
    names = {n[len(weights) :] for n in local_bucket.list(weights)}
    assert names == {"adapter_config.json", "adapter_model.safetensors", "SHA256SUMS"}
    adapter = json.loads(local_bucket.read(weights + "adapter_config.json"))
    assert adapter["base_model_name_or_path"] == "tiny-llama"
    config = json.loads(local_bucket.read("users/usr_1/models/model_job_1/config.json"))
    assert config["stopped"] and config["from_checkpoint"]["step"] == job.step


def test_a_killed_trainer_is_retried_from_its_checkpoint_and_the_steps_continue(
    queued_job,
    make_runner,
    app: UserApp,
    local_bucket: LocalBucket,
    publisher: RecordingPublisher,
    monkeypatch,
) -> None:
    monkeypatch.setenv("FAKE_KILL_AT", "1:5")
    queued_job()
    assert make_runner().run() is Outcome.RETRYING
    job = app.get_job("job_1")
    assert (job.state, job.attempt) == (JobState.RETRYING, 2)
    assert "SIGKILL" in (job.error or "")
    assert job.last_checkpoint is not None and job.last_checkpoint.step == 3

    assert make_runner(attempt=2).run() is Outcome.SUCCEEDED
    assert app.get_job("job_1").state == JobState.SUCCEEDED
    steps = [(m["attempt"], m["step"]) for m in metric_lines(local_bucket, 2) if m["event"] == "step"]
    assert steps == [(1, s) for s in range(1, 6)] + [(2, s) for s in range(4, 11)]
    assert publisher.of("job_1", 1)[-1].final and publisher.of("job_1", 2)[-1].final
    assert "resuming from the checkpoint at step 3" in job_log(local_bucket, 2)
    assert app.get_job("job_1").last_checkpoint.path.startswith(JOB + "attempts/2/checkpoints/")
    # each attempt wrote under its own prefix only; the second resumed from the first's checkpoint
    writers: dict[str, set[str]] = {}
    for name in local_bucket.list(JOB + "attempts/"):
        writers.setdefault(name.split("/")[5], set()).add(name)
    assert set(writers) == {"1", "2"} and not writers["1"] & writers["2"]


def test_with_no_retries_left_a_failure_fails_the_job(
    queued_job, make_runner, app: UserApp, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_KILL_AT", "1:2")
    queued_job(max_retries=0)
    assert make_runner().run() is Outcome.FAILED
    job = app.get_job("job_1")
    assert job.state == JobState.FAILED and "no retries left" in (job.error or "")


def test_bad_input_fails_at_once_without_a_retry(queued_job, make_runner, app: UserApp, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_INVALID", "1")
    queued_job(max_retries=3)
    assert make_runner().run() is Outcome.FAILED
    job = app.get_job("job_1")
    assert (job.state, job.attempt) == (JobState.FAILED, 1) and "bad rank" in (job.error or "")


START = {"kind": "checkpoint", "id": "job_0:4", "path": "users/usr_1/jobs/job_0/attempts/1/checkpoints/4/"}


def test_a_job_started_from_a_checkpoint_gets_its_weights_without_its_trainer_state(
    queued_job, make_runner, app: UserApp, local_bucket: LocalBucket, tmp_path: Path
) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json"):
        local_bucket.write(START["path"] + name, b"{}")
    queued_job(start_from=START)
    assert make_runner(keep_workdir=True).run() is Outcome.SUCCEEDED

    work = tmp_path / "work" / "job_1-1"
    trainer_run = (work / "run.yaml").read_text()
    assert f"init_from: {work / 'start'}" in trainer_run and "resume_from: null" in trainer_run
    assert sorted(p.name for p in (work / "start").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert f"starting from the weights at {START['path']}" in job_log(local_bucket)


def test_a_start_point_gone_from_the_bucket_fails_the_job_without_a_retry(
    queued_job, make_runner, app: UserApp
) -> None:
    queued_job(start_from=START, max_retries=3)
    assert make_runner().run() is Outcome.FAILED
    job = app.get_job("job_1")
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert "the weights to start from are no longer in the bucket" in (job.error or "")


def test_a_missing_dataset_fails_the_job(
    queued_job, make_runner, app: UserApp, local_bucket: LocalBucket
) -> None:
    queued_job()
    local_bucket.delete("users/usr_1/data/ds_1/processed/train.jsonl")
    assert make_runner().run() is Outcome.FAILED
    assert "no processed data" in (app.get_job("job_1").error or "")


def test_a_job_stopped_before_its_runner_starts_is_left_alone(
    queued_job, make_runner, app: UserApp, publisher: RecordingPublisher
) -> None:
    queued_job()
    app.request_stop("job_1", "changed my mind", now())
    assert make_runner().run() is Outcome.SKIPPED
    assert app.get_job("job_1").state == JobState.STOPPED and not publisher.heartbeats


def test_an_interrupted_runner_checkpoints_and_leaves_the_job_retrying(
    slow_runner: JobRunner, app: UserApp
) -> None:
    once_training(app, slow_runner.interrupt)
    assert slow_runner.run() is Outcome.RETRYING
    job = app.get_job("job_1")
    assert (job.state, job.attempt) == (JobState.RETRYING, 2)
    assert job.last_checkpoint is not None and job.last_checkpoint.step >= 2


@pytest.mark.parametrize("keep", [False, True])
def test_the_working_folder_is_removed_unless_kept(queued_job, make_runner, keep: bool) -> None:
    queued_job(max_steps=2)
    runner = make_runner(keep_workdir=keep)
    runner.run()
    assert runner.work.root.exists() is keep


def test_the_entry_point_refuses_a_missing_run_yaml_with_status_2(local_bucket: LocalBucket) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "runners.job_runner", local_bucket.url, "users/usr_1/jobs/job_1/run.yaml"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == b""
    assert b"no run.yaml at users/usr_1/jobs/job_1/run.yaml" in done.stderr


def test_the_first_use_of_a_base_model_is_told_in_the_log_and_the_status(
    local_bucket: LocalBucket, app: UserApp, make_runner: Callable[..., JobRunner], tmp_path: Path
) -> None:
    folder = tmp_path / "operator"
    folder.mkdir()
    files = {"config.json": b'{"model_type": "fake"}', "model.safetensors": b"w", "vocab.json": b"{}"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    source = BaseModelSource("my-model", "local", str(folder))
    seed_dataset(local_bucket, app)

    def run(job_id: str) -> str:
        submit_job(app, job_id=job_id, base_model="my-model", **JOB_CONFIG)
        app.queue_job(job_id, now())
        assert make_runner(job_id, base_model_source=source).run() is Outcome.SUCCEEDED
        return local_bucket.read(f"users/usr_1/jobs/{job_id}/attempts/1/job.log").decode()

    log = run("job_1")
    converting = log.index("converting base model my-model (first use), this takes a minute")
    converted = log.index("base model my-model converted and stored in ")
    assert converting < converted < log.index("trainer exited")
    activities = [
        e.activity for e in app.events.get(Job.create_id("job_1")) if isinstance(e, Job.ActivityReported)
    ]
    assert activities == ["converting base model my-model (first use), this takes a minute", None]

    log = run("job_2")  # the model is in the bucket now: nothing to convert, nothing to say
    assert "converting" not in log
    assert not any(isinstance(e, Job.ActivityReported) for e in app.events.get(Job.create_id("job_2")))


NEVER_STOPS = '{"stops": false, "new_tokens": 64, "max_new_tokens": 64, "sample": "la la la"}'


def test_a_model_that_never_stops_is_published_flagged(queued_job, make_runner, app, local_bucket) -> None:
    """Issue 14: the stop gate runs before a model is published; its verdict goes with the model (its
    events, its config.json), a model that never stops is flagged, not refused."""
    queued_job()
    gate = [sys.executable, "-c", f"print('noise'); print({NEVER_STOPS!r})"]
    assert make_runner(stop_gate_command=gate).run() is Outcome.SUCCEEDED
    model = app.get_model("model_job_1")
    assert model.stop_gate == {"stops": False, "new_tokens": 64, "max_new_tokens": 64, "sample": "la la la"}
    config = json.loads(local_bucket.read("users/usr_1/models/model_job_1/config.json"))
    assert config["stop_gate"]["stops"] is False


def test_a_stop_gate_that_cannot_run_publishes_the_model_unchecked(queued_job, make_runner, app) -> None:
    queued_job()
    assert (
        make_runner(stop_gate_command=[sys.executable, "-c", "raise SystemExit(1)"]).run()
        is Outcome.SUCCEEDED
    )
    assert app.get_model("model_job_1").stop_gate is None


def test_a_validation_dataset_is_fetched_and_an_early_stop_succeeds_with_the_best_checkpoint(
    queued_job, make_runner, app: UserApp, local_bucket: LocalBucket
) -> None:
    seed_dataset(local_bucket, app, "ds_val", b'{"messages": []}\n' * 2)
    queued_job(validation_dataset_id="ds_val", early_stopping_patience=2)  # evals at 3, 6, 9, rising
    assert make_runner().run() is Outcome.SUCCEEDED

    job = app.get_job("job_1")
    assert (job.state, job.step) == (JobState.SUCCEEDED, 9)
    assert job.metrics is not None and (job.metrics["best_step"], job.metrics["eval_loss"]) == (3.0, 1.03)
    assert job.metrics["early_stopped_at_step"] == 9.0  # what says it stopped early (OpenAI's events)
    assert app.get_model("model_job_1").metrics == job.metrics
    evals = [(r["step"], r["eval_loss"]) for r in metric_lines(local_bucket) if r["event"] == "eval"]
    assert evals == [(3, 1.03), (6, 1.06), (9, 1.09)]
    log = job_log(local_bucket)
    assert (
        "on 3 examples, validated on 2 (" in log
        and "training succeeded at step 9 of 10: stopped early" in log
    )
    assert "the model is the best checkpoint's, step 3 (eval_loss 1.0300)" in log


def test_a_missing_validation_dataset_fails_the_job(queued_job, make_runner, app: UserApp) -> None:
    queued_job(validation_dataset_id="ds_gone")
    assert make_runner().run() is Outcome.FAILED
    assert "validation dataset ds_gone has no processed data" in (app.get_job("job_1").error or "")


def test_a_pause_request_checkpoints_and_ends_the_attempt_paused_then_a_resume_continues_from_it(
    slow_runner: JobRunner,
    make_runner,
    app: UserApp,
    local_bucket: LocalBucket,
    publisher: RecordingPublisher,
    monkeypatch,
) -> None:
    once_training(app, lambda: app.request_pause("job_1", now()))
    assert slow_runner.run() is Outcome.PAUSED

    job = app.get_job("job_1")
    assert job.state == JobState.PAUSED and 2 <= job.step < 200
    assert job.last_checkpoint is not None and job.last_checkpoint.step == job.step  # saved by the pause
    assert local_bucket.exists(f"{ATTEMPT}checkpoints/{job.step}/trainer_state.json")
    assert publisher.of("job_1")[-1].final  # metering ends with the attempt's final heartbeat
    assert not list(local_bucket.list("users/usr_1/models/"))  # no model published
    assert "paused at step" in job_log(local_bucket)
    paused_at = job.step

    monkeypatch.setenv("FAKE_STEP_S", "0")
    app.resume_job("job_1", now())
    assert make_runner(attempt=2).run() is Outcome.SUCCEEDED
    steps = [(m["attempt"], m["step"]) for m in metric_lines(local_bucket, 2) if m["event"] == "step"]
    assert steps[-1] == (2, 200) and min(s for a, s in steps if a == 2) == paused_at + 1
    assert f"resuming from the checkpoint at step {paused_at}" in job_log(local_bucket, 2)
