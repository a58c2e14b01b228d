"""Events for projection tests, made by the real aggregates and stored in POPO Applications."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.budget import Budget
from domain.dataset import Dataset
from domain.job import Job
from domain.model import Model
from domain.money import period_of
from domain.pricing import PriceList
from domain.user import User
from storage.bucket import Bucket, BucketError, ObjectStat
from tests.buckets import ForwardingBucket

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SHA = hashlib.sha256(b"x").hexdigest()
A = TypeVar("A")


class Apps:
    """One POPO Application per partition: ``open_app`` for a Projector."""

    def __init__(self) -> None:
        self.apps: dict[str, Application[Any]] = {}

    def __call__(self, partition: str) -> Application[Any]:
        if partition not in self.apps:
            self.apps[partition] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        return self.apps[partition]


def new_model(model_id: str, at: datetime, *, user_id: str = "u1", job_id: str = "j1", **kw: Any) -> Model:
    """A LoRA model made by ``job_id``, registered, not saved; ``kw``: other ``Model.register`` fields."""
    fields: dict[str, Any] = {
        "base_model": "llama3-8b",
        "kind": "lora",
        "weights_prefix": f"users/{user_id}/models/{model_id}/weights/",
        "sha256": SHA,
        "size_bytes": 1234,
        "metrics": {"loss": 0.5},
    } | kw
    return Model.register(model_id=model_id, user_id=user_id, job_id=job_id, at=at, **fields)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self, seconds: float = 60) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class UserLog:
    """A user's partition driven through the aggregates: each method saves what it changed."""

    def __init__(self, app: Application[Any], user_id: str = "u1", clock: Clock | None = None) -> None:
        self.app, self.user_id, self.clock = app, user_id, clock or Clock()
        self.jobs: dict[str, Job] = {}
        self.datasets: dict[str, Dataset] = {}
        self.models: dict[str, Model] = {}
        self.budget: Budget | None = None

    def save(self, *aggregates: Any) -> int:
        """Save and return the last notification id."""
        recordings = self.app.save(*aggregates)
        return recordings[-1].notification.id if recordings else 0

    def submit(self, job_id: str, **kw: Any) -> Job:
        """A job on one a100-80gb with a cost limit; ``kw``: other ``Job.submit`` fields."""
        fields: dict[str, Any] = {
            "user_id": self.user_id,
            "base_model": "llama3-8b",
            "dataset_id": "ds1",
            "model_id": f"m-{job_id}",
            "config": {"epochs": 1},
            "gpu_type": "a100-80gb",
            "gpu_count": 1,
            "max_cost_usd_micros": 50_000_000,
            "estimate_usd_micros": 1_000_000,
        } | kw
        return self._add(self.jobs, job_id, Job.submit(job_id=job_id, at=self.clock(), **fields))

    def _add(self, kept: dict[str, A], key: str, aggregate: A) -> A:
        """Keep a new aggregate under ``key`` and save it."""
        kept[key] = aggregate
        self.save(aggregate)
        return aggregate

    def _act(self, aggregate: Any, method: str, *args: Any, **kw: Any) -> int:
        """Call ``method`` of ``aggregate`` (``at`` supplied) and save."""
        getattr(aggregate, method)(*args, at=self.clock(), **kw)
        return self.save(aggregate)

    def do(self, job_id: str, method: str, *args: Any, **kw: Any) -> int:
        """Call a Job method (``at`` supplied) and save."""
        return self._act(self.jobs[job_id], method, *args, **kw)

    def run(self, job_id: str) -> None:
        """submitted -> queued -> running (attempt 1)."""
        self.do(job_id, "queue")
        self.do(job_id, "start", 1)

    def meter(self, job_id: str, gpu_ms: int, price: int, *, period: str | None = None, seq: int = 0) -> int:
        job = self.jobs[job_id]
        at = self.clock()
        first = job.metered_seq.get(str(job.attempt), -1) + 1 if seq == 0 else seq
        job.meter_usage(
            job.attempt,
            first,
            first,
            job.gpu_type,
            job.gpu_count,
            gpu_ms,
            price,
            period or period_of(at),
            at=at,
        )
        return self.save(job)

    def upload(self, dataset_id: str, filename: str = "train.jsonl") -> Dataset:
        ds = Dataset.upload(
            dataset_id=dataset_id,
            user_id=self.user_id,
            filename=filename,
            size_bytes=10,
            sha256=SHA,
            at=self.clock(),
        )
        return self._add(self.datasets, dataset_id, ds)

    def dataset(self, dataset_id: str, method: str, *args: Any, **kw: Any) -> int:
        return self._act(self.datasets[dataset_id], method, *args, **kw)

    def register_model(self, model_id: str, job_id: str = "j1") -> Model:
        model = new_model(model_id, self.clock(), user_id=self.user_id, job_id=job_id)
        return self._add(self.models, model_id, model)

    def delete_model(self, model_id: str) -> int:
        return self._act(self.models[model_id], "delete")

    def set_budget(self, limit: int | None, thresholds: list[int] | None = None) -> int:
        if self.budget is None:
            self.budget = Budget.create(self.user_id, at=self.clock())
        self.budget.set_limit(limit, at=self.clock(), thresholds_pct=thresholds)
        return self.save(self.budget)

    def budget_alert(self, period: str, threshold: int, spent: int) -> int:
        assert self.budget is not None
        self.budget.raise_alert(period, threshold, spent, at=self.clock())
        return self.save(self.budget)


class PlatformLog:
    """The platform partition: users and the price list."""

    def __init__(self, app: Application[Any], clock: Clock | None = None) -> None:
        self.app, self.clock = app, clock or Clock()
        self.users: dict[str, User] = {}
        self.prices: PriceList | None = None

    def register(self, user_id: str, email: str | None = None, role: str = "user") -> User:
        user = User.register(
            user_id=user_id,
            email=email or f"{user_id}@example.com",
            password_hash="$argon2$x",
            role=role,
            at=self.clock(),
        )
        self.users[user_id] = user
        self.app.save(user)
        return user

    def user(self, user_id: str, method: str, *args: Any, **kw: Any) -> None:
        getattr(self.users[user_id], method)(*args, at=self.clock(), **kw)
        self.app.save(self.users[user_id])

    def set_price(self, gpu_type: str, micros_per_hour: int, effective_at: datetime | None = None) -> None:
        at = self.clock()
        if self.prices is None:
            self.prices = PriceList.create(at=at)
        self.prices.set_price(gpu_type, micros_per_hour, effective_at or at, at=at)
        self.app.save(self.prices)


def copy_log(source: Application[Any], target: Application[Any], *, upto: int | None = None) -> None:
    """Append to ``target`` the notifications of ``source`` it lacks, up to ``upto`` (a lagging replica)."""
    have = target.recorder.max_notification_id() or 0
    for n in source.recorder.select_notifications(start=have + 1, limit=10_000, stop=upto):
        target.recorder.insert_events([StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)])


def events_of(*aggregates: Any) -> list[Any]:
    """The pending events of fresh aggregates, in order (without saving)."""
    out: list[Any] = []
    for aggregate in aggregates:
        out.extend(aggregate.collect_events())
    return out


class FlakyBucket(ForwardingBucket):
    """A bucket that counts calls and can fail a chosen write (a fake of our own interface)."""

    def __init__(self, inner: Bucket, *, fail_on_write: int | None = None) -> None:
        super().__init__(inner)
        self.fail_on_write = fail_on_write
        self.reads = self.stats = self.writes = 0

    def read(self, name: str) -> bytes:
        self.reads += 1
        return super().read(name)

    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        self.reads += 1
        return super().read_with_stat(name)

    def open_read(self, name: str) -> BinaryIO:
        self.reads += 1
        return super().open_read(name)

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        self.writes += 1
        if self.fail_on_write is not None and self.writes >= self.fail_on_write:
            raise BucketError(f"injected failure on write {self.writes} ({name})")
        return super().write(name, data, if_generation_match=if_generation_match)

    def stat(self, name: str) -> ObjectStat:
        self.stats += 1
        return super().stat(name)
