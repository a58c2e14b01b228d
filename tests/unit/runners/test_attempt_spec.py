"""The attempt spec (the bucket's run.yaml): built from a job, written to and read back, checked."""

from __future__ import annotations

import pytest

from domain.applications import UserApp
from domain.errors import ValidationFailed
from runners.attempt_spec import JobRunSpec, build_attempt_spec, read_job_run, write_job_run
from storage import LocalBucket, layout
from tests.unit.runners.builders import now, seed_dataset, submit_job


@pytest.fixture
def job(local_bucket: LocalBucket, app: UserApp):
    seed_dataset(local_bucket, app)
    submit_job(app, max_steps=5, heartbeat_interval_seconds=0.25, max_retries=4, max_cost="3.50", gpu_count=2)
    app.queue_job("job_1", now())
    app.start_job("job_1", 1, now())
    app.save_checkpoint("job_1", 1, 40, "users/usr_1/jobs/job_1/checkpoints/40/", now())
    return app.get_job("job_1")


def test_an_attempt_spec_is_built_from_the_job_and_round_trips_through_the_bucket(
    job, local_bucket: LocalBucket
) -> None:
    spec = build_attempt_spec(job, attempt=2, heartbeat_url="pubsub://p/beats/ledger")
    assert (spec.attempt, spec.model_id, spec.base_model, spec.dataset_id) == (
        2,
        "model_job_1",
        "tiny-llama",
        "ds_1",
    )
    assert (spec.gpu_type, spec.gpu_count, spec.heartbeat_interval_s, spec.max_retries) == ("cpu", 2, 0.25, 4)
    assert spec.max_cost_usd_micros == 3_500_000
    assert spec.resume_from == "users/usr_1/jobs/job_1/checkpoints/40/"
    assert spec.config.max_steps == 5

    name = write_job_run(local_bucket, spec)
    assert name == layout.job_run("usr_1", "job_1") == "users/usr_1/jobs/job_1/run.yaml"
    assert read_job_run(local_bucket, name) == spec


def test_object_names_follow_the_bucket_layout(job) -> None:
    spec = build_attempt_spec(job, attempt=1)
    root = "users/usr_1/jobs/job_1/attempts/1/"
    assert (spec.log_object, spec.metrics_object) == (root + "job.log", root + "metrics.jsonl")
    assert spec.checkpoint_prefix(12) == root + "checkpoints/12/"
    assert spec.checkpoints_prefix == root + "checkpoints/"
    assert spec.unsent_heartbeats_object == "users/usr_1/unsent-heartbeats/job_1/1.jsonl"
    second = build_attempt_spec(job, attempt=2)
    assert second.log_object == "users/usr_1/jobs/job_1/attempts/2/job.log" != spec.log_object
    assert second.checkpoint_prefix(12) != spec.checkpoint_prefix(12)
    assert spec.dataset_object == "users/usr_1/data/ds_1/processed/train.jsonl"
    assert spec.weights_prefix == "users/usr_1/models/model_job_1/weights/"
    assert spec.model_config_object == "users/usr_1/models/model_job_1/config.json"
    assert spec.base_model_prefix == "base-models/tiny-llama/"


def test_a_resume_point_outside_the_jobs_checkpoints_is_refused(job) -> None:
    spec = build_attempt_spec(job, attempt=2)
    fields = {f: getattr(spec, f) for f in spec.__struct_fields__}
    with pytest.raises(ValidationFailed, match="resume_from"):
        JobRunSpec(**{**fields, "resume_from": "users/someone_else/jobs/x/checkpoints/1/"})
    for own_or_later in ("attempts/2/checkpoints/1/", "attempts/3/checkpoints/1/", "attempts/1/job.log"):
        with pytest.raises(ValidationFailed, match="resume_from"):
            JobRunSpec(**{**fields, "resume_from": "users/usr_1/jobs/job_1/" + own_or_later})
    for earlier in ("attempts/1/checkpoints/40/", "checkpoints/40/"):  # the latter: an older job's
        resumed = JobRunSpec(**{**fields, "resume_from": "users/usr_1/jobs/job_1/" + earlier})
        assert resumed.resume_from is not None
    with pytest.raises(ValidationFailed, match="job_id"):
        JobRunSpec(**{**fields, "job_id": "../../etc"})


START = {"kind": "model", "id": "mdl_0", "path": "users/usr_1/models/mdl_0/weights/"}


def test_a_job_starts_from_its_start_point_until_it_has_a_checkpoint_of_its_own(
    local_bucket: LocalBucket, app: UserApp
) -> None:
    seed_dataset(local_bucket, app)
    submit_job(app, start_from=START, max_steps=5)
    app.queue_job("job_1", now())
    first = build_attempt_spec(app.get_job("job_1"), attempt=1)
    assert (first.start_from, first.resume_from) == (START["path"], None)
    assert read_job_run(local_bucket, write_job_run(local_bucket, first)) == first

    app.start_job("job_1", 1, now())
    app.retry_job("job_1", 2, "lost before its first checkpoint", now())
    assert build_attempt_spec(app.get_job("job_1"), attempt=2).start_from == START["path"]
    app.start_job("job_1", 2, now())
    app.save_checkpoint("job_1", 2, 4, "users/usr_1/jobs/job_1/attempts/2/checkpoints/4/", now())
    app.retry_job("job_1", 3, "lost", now())
    third = build_attempt_spec(app.get_job("job_1"), attempt=3)
    assert (third.start_from, third.resume_from) == (None, "users/usr_1/jobs/job_1/attempts/2/checkpoints/4/")


@pytest.mark.parametrize(
    "start_from",
    ["users/usr_2/models/mdl_0/weights/", "users/usr_1/models/../../usr_2/x/", "users/usr_1/models/mdl_0"],
)
def test_a_start_point_outside_the_users_folders_is_refused(job, start_from: str) -> None:
    spec = build_attempt_spec(job, attempt=1)
    fields = {f: getattr(spec, f) for f in spec.__struct_fields__}
    with pytest.raises(ValidationFailed, match="start_from"):
        JobRunSpec(**{**fields, "resume_from": None, "start_from": start_from})
    assert JobRunSpec(**{**fields, "resume_from": None, "start_from": START["path"]}).start_from


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b"job_id: [unclosed", "not valid YAML"),
        (b"- a list", "must be a mapping"),
        (b"job_id: job_1\n", "run.yaml"),
        (b"config: {lora: {r: 0}}\n", "lora.r"),
    ],
)
def test_a_broken_run_yaml_is_refused_with_the_reason(
    local_bucket: LocalBucket, text: bytes, where: str
) -> None:
    local_bucket.write("users/u/jobs/j/run.yaml", text)
    with pytest.raises(ValidationFailed, match=where):
        read_job_run(local_bucket, "users/u/jobs/j/run.yaml")


def test_a_missing_run_yaml_is_refused(local_bucket: LocalBucket) -> None:
    with pytest.raises(ValidationFailed, match=r"no run\.yaml"):
        read_job_run(local_bucket, "users/u/jobs/j/run.yaml")
