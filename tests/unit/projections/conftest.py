"""Fixtures of the projection tests: a bucket holding a small history, projected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.model import ModelWeights
from projections.projector import Projector
from projections.replay import apps_on
from storage import LocalBucket
from storage.eventstore import open_platform, open_user
from storage.layout import PLATFORM
from tests.jobs import submit_tiny_job
from tests.usage import meter

T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def write_history(bucket: LocalBucket) -> None:
    """User u1 with a validated dataset, two jobs metered ten minutes each, one succeeded with a model."""
    platform = open_platform(bucket)
    platform.register_user("u1@example.com", "$argon2$h", "user", T0, user_id="u1")
    platform.set_price("a100-80gb", 2_100_000, T0, T0)
    app = open_user(bucket, "u1")
    t = (T0 + timedelta(minutes=i) for i in range(1, 1000))
    app.upload_dataset("d0", "train.jsonl", 100, "0" * 64, next(t))
    app.validate_dataset("d0", "chat", 3, {}, next(t))
    for job_id in ("j1", "j2"):
        submit_tiny_job(app, job_id, next(t))
        app.queue_job(job_id, next(t))
        app.start_job(job_id, 1, next(t))
        meter(app, job_id, 1, 0, 3, "a100-80gb", 1, 600_000, 2_100_000, "2024-03", next(t))
    weights = ModelWeights(
        kind="lora", weights_prefix="users/u1/models/m-j1/weights/", sha256="0" * 64, size_bytes=1
    )
    app.mark_succeeded("j1", next(t), weights=weights)


@pytest.fixture
def projected(tmp_path: Path) -> LocalBucket:
    """Platform and ``users/u1`` logs in the real event store, their views written by a projector."""
    bucket = LocalBucket(tmp_path / "bucket", fsync=False)  # unit tests: no power-loss safety needed
    write_history(bucket)
    projector = Projector(bucket, apps_on(bucket))
    projector.catch_up(PLATFORM)
    projector.catch_up("users/u1")
    return bucket
