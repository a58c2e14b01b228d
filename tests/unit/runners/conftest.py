"""Fixtures of the runner tests: an in-memory UserApp, a queued job on a local bucket, and a job
runner driving the fake trainer (``fake_trainer.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from domain.applications import UserApp
from domain.read_models import JobView
from runners.attempt_spec import JobRunSpec, build_attempt_spec
from runners.job_runner import JobRunner
from storage import LocalBucket
from tests.unit.runners.builders import RecordingPublisher, fake_base_model, now, seed_dataset, submit_job

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")

JOB_CONFIG: dict[str, Any] = {
    "max_steps": 10,
    "checkpoint_every_steps": 3,
    "heartbeat_interval_seconds": 0.1,
    "max_retries": 1,
}


@pytest.fixture
def app() -> UserApp:
    return UserApp("usr_1")


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def queued_job(local_bucket: LocalBucket, app: UserApp) -> Callable[..., JobView]:
    """Make a queued job on the fake base model; keyword arguments override ``JOB_CONFIG``."""

    def make(job_id: str = "job_1", **config: Any) -> JobView:
        fake_base_model(local_bucket)
        if not local_bucket.exists(f"users/{app.user_id}/data/ds_1/processed/train.jsonl"):
            seed_dataset(local_bucket, app)
        submit_job(app, job_id=job_id, **{**JOB_CONFIG, **config})
        return app.queue_job(job_id, now())

    return make


@pytest.fixture
def make_runner(
    local_bucket: LocalBucket, app: UserApp, publisher: RecordingPublisher, tmp_path: Path
) -> Callable[..., JobRunner]:
    """A JobRunner for ``attempt`` of a job (its run.yaml built from the job's state), on the fake trainer.

    ``base_model_source`` goes into the run.yaml (where an operator's base model comes from).
    """

    def make(
        job_id: str = "job_1", attempt: int = 1, *, base_model_source: Any = None, **options: Any
    ) -> JobRunner:
        spec: JobRunSpec = build_attempt_spec(
            app.get_job(job_id), attempt=attempt, base_model_source=base_model_source
        )
        options.setdefault("publisher", publisher)
        options.setdefault("stop_gate_command", None)  # the fake trainer's model is no model
        return JobRunner(
            local_bucket,
            spec,
            app=app,
            work_root=tmp_path / "work",
            cache_dir=tmp_path / "cache",
            trainer_command=[sys.executable, str(FAKE_TRAINER)],
            **options,
        )

    return make
