"""Helpers for runner tests: a validated dataset and a submitted job, a fake base model,
a recording heartbeat publisher, and ``wait_for``."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from domain.applications import UserApp
from domain.read_models import JobView
from domain.training_config import parse_training_config
from runners.base_models import MARKER
from storage import Bucket
from storage.heartbeats import Heartbeat, HeartbeatPublisher

T = TypeVar("T")

SAMPLE = Path(__file__).resolve().parents[3] / "runners" / "samples" / "brindlewick.jsonl"


def now() -> datetime:
    return datetime.now(UTC)


def seed_dataset(bucket: Bucket, app: UserApp, dataset_id: str = "ds_1", data: bytes | None = None) -> str:
    """A validated dataset whose processed train.jsonl is ``data`` (default: the sample set)."""
    data = SAMPLE.read_bytes() if data is None else data
    bucket.write(f"users/{app.user_id}/data/{dataset_id}/processed/train.jsonl", data)
    app.upload_dataset(dataset_id, "train.jsonl", len(data), hashlib.sha256(data).hexdigest(), now())
    app.validate_dataset(dataset_id, "chat", data.count(b"\n") or 1, {}, now())
    return dataset_id


def submit_job(
    app: UserApp,
    *,
    job_id: str = "job_1",
    dataset_id: str = "ds_1",
    base_model: str = "tiny-llama",
    start_from: dict[str, Any] | None = None,
    **config: Any,
) -> JobView:
    """A submitted job (``model_<job_id>`` is its model) with ``config`` as its training config,
    starting from ``start_from`` (``JobFields.start_from``; None: its base model)."""
    checked = parse_training_config(config)
    app.submit_job(
        job_id=job_id,
        model_id=f"model_{job_id}",
        base_model=base_model,
        dataset_id=dataset_id,
        config=config,
        gpu_type=checked.gpu_type,
        gpu_count=checked.gpu_count,
        max_cost_usd_micros=checked.max_cost_usd_micros,
        at=now(),
        start_from=start_from,
    )
    return app.get_job(job_id)


def fake_base_model(bucket: Bucket, name: str = "tiny-llama") -> None:
    """A whole-looking ``base-models/<name>/`` (for the fake trainer, which loads nothing)."""
    prefix = f"base-models/{name}/"
    bucket.write(prefix + "config.json", json.dumps({"model_type": "fake"}).encode())
    bucket.write(prefix + MARKER, json.dumps({"name": name}).encode())


class RecordingPublisher(HeartbeatPublisher):
    """Keeps every heartbeat published (thread-safe)."""

    def __init__(self) -> None:
        self.heartbeats: list[Heartbeat] = []
        self.closed = False
        self._lock = threading.Lock()

    def publish(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self.heartbeats.append(heartbeat)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def of(self, job_id: str, attempt: int | None = None) -> list[Heartbeat]:
        with self._lock:
            return [h for h in self.heartbeats if h.job_id == job_id and attempt in (None, h.attempt)]


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)
