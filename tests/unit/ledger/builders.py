"""A platform on an in-memory bucket for ledger tests: prices, users with running jobs, heartbeats.

Everything is real (the event store on a ``MemoryBucket``, ``PlatformApp``, ``UserApp``,
the projector); only the heartbeat subscriber is a stand-in (``ManualSubscriber``) where a
test drives ``LedgerWorker.handle`` itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.applications import PlatformApp, UserApp
from domain.budget import Budget
from domain.errors import NotFound
from domain.job import Job
from projections.projector import Projector
from projections.render import decode
from projections.replay import replay
from runners.ledger import LedgerWorker
from storage import Bucket, layout
from storage.eventstore import open_platform, open_user
from storage.heartbeats import Handler, Heartbeat, HeartbeatSubscriber, attempt_secret, sign_heartbeat
from storage.layout import user_partition
from storage.memory import MemoryBucket

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SHA = hashlib.sha256(b"x").hexdigest()
A100 = "a100-80gb"
A100_PRICE = 2_100_000
INTERVAL_S = 10
HEARTBEAT_KEY = b"test-platform-heartbeat-key"
"""The platform heartbeat key of every ledger these builders make (``Platform.worker``)."""


class ManualSubscriber(HeartbeatSubscriber):
    """A subscriber the test feeds by calling ``worker.handle``; ``start``/``close`` only record."""

    max_batch = 500

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.closed = False

    def start(self, handler: Handler) -> None:
        self.handler = handler

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Clock:
    """A settable clock: ``clock()`` is now; ``clock.advance(seconds)``."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=seconds)
            return self.now


class Platform:
    """A bucket with an event store, prices, and helpers to make users and running jobs."""

    def __init__(self, bucket: Bucket | None = None, *, clock: Clock | None = None) -> None:
        self.bucket = bucket if bucket is not None else MemoryBucket()
        self.clock = clock or Clock()
        self.platform: PlatformApp = open_platform(self.bucket)
        try:
            self.platform.price_at(A100, T0)  # another process on the same bucket set it already
        except NotFound:
            self.platform.set_price(A100, A100_PRICE, T0 - timedelta(days=30), T0 - timedelta(days=30))
        self._apps: dict[str, UserApp] = {}
        self._lock = threading.Lock()
        self.projector = Projector(self.bucket, self.open_partition)

    def user_app(self, user_id: str) -> UserApp:
        with self._lock:
            if user_id not in self._apps:
                self._apps[user_id] = open_user(self.bucket, user_id, AGGREGATE_CACHE_MAXSIZE="100")
            return self._apps[user_id]

    def open_partition(self, partition: str) -> Any:
        return self.platform if partition == "platform" else self.user_app(partition.split("/", 1)[1])

    def set_price(self, gpu_type: str, usd_micros_per_hour: int, effective_at: datetime) -> None:
        """Announced a day before ``T0``, or at ``effective_at`` if that is earlier (never back-dated)."""
        at = min(effective_at, T0 - timedelta(days=1))
        self.platform.set_price(gpu_type, usd_micros_per_hour, effective_at, at)

    def running_job(
        self,
        user_id: str,
        job_id: str,
        *,
        gpu_type: str = A100,
        gpu_count: int = 1,
        max_cost_usd_micros: int | None = None,
        max_retries: int = 2,
        interval_s: float = INTERVAL_S,
        at: datetime = T0,
    ) -> None:
        """Submit, queue and start attempt 1 of a job (the user and dataset are made if missing)."""
        app = self.user_app(user_id)
        try:
            app.get_dataset("ds1")
        except NotFound:
            app.upload_dataset("ds1", "train.jsonl", 10, SHA, at)
            app.validate_dataset("ds1", "chat", 1, {}, at)
        config = {"heartbeat_interval_seconds": interval_s, "max_retries": max_retries}
        app.submit_job(
            job_id=job_id,
            base_model="tiny-llama",
            dataset_id="ds1",
            config=config,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            max_cost_usd_micros=max_cost_usd_micros,
            at=at,
        )
        app.queue_job(job_id, at)
        app.start_job(job_id, 1, at)

    def worker(self, subscriber: HeartbeatSubscriber | None = None, **options: Any) -> LedgerWorker:
        options.setdefault("clock", self.clock)
        options.setdefault("flush_interval_s", 0.0)
        options.setdefault("heartbeat_key", HEARTBEAT_KEY)
        return LedgerWorker(
            self.bucket,
            self.platform,
            self.user_app,
            subscriber or ManualSubscriber(),
            self.projector,
            **options,
        )

    # ---- reading back ----

    def billing_json(self, user_id: str) -> dict[str, Any]:
        """``metadata/billing.json`` as the projector wrote it (after catching up)."""
        partition = user_partition(user_id)
        self.projector.catch_up(partition)
        return decode(self.bucket.read(layout.billing(user_id)))  # type: ignore[no-any-return]

    def replayed_billing(self, user_id: str) -> bytes:
        """billing.json's bytes from a replay of the user's log from position 0."""
        partition = user_partition(user_id)
        part = replay(self.user_app(user_id), partition)
        return part.views.render(layout.billing(user_id))

    def stored_billing(self, user_id: str) -> bytes:
        partition = user_partition(user_id)
        self.projector.catch_up(partition)
        return self.bucket.read(layout.billing(user_id))

    def events(self, user_id: str) -> list[Any]:
        app = self.user_app(user_id)
        return [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 1_000_000)]

    def events_of(self, user_id: str, *types: type) -> list[Any]:
        return [e for e in self.events(user_id) if isinstance(e, types)]

    def job(self, user_id: str, job_id: str) -> Any:
        return self.user_app(user_id).get_job(job_id)


def beat(
    job_id: str,
    seq: int,
    *,
    user_id: str = "u1",
    attempt: int = 1,
    gpu_ms_total: int | None = None,
    at: datetime | None = None,
    gpu_type: str = A100,
    gpu_count: int = 1,
    final: bool = False,
    signed: bool = True,
) -> Heartbeat:
    """Heartbeat ``seq`` of an attempt, signed as its runner signs; ``at``: ``T0 + seq`` intervals;
    ``gpu_ms_total`` (the attempt's cumulative GPU ms): ``seq`` intervals unless given."""
    heartbeat = Heartbeat(
        user_id=user_id,
        job_id=job_id,
        attempt=attempt,
        seq=seq,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_ms_total=seq * INTERVAL_S * 1000 if gpu_ms_total is None else gpu_ms_total,
        step=seq,
        loss=1.0,
        tokens=100 * seq,
        at=at if at is not None else T0 + timedelta(seconds=INTERVAL_S * seq),
        final=final,
    )
    return sign(heartbeat) if signed else heartbeat


def sign(heartbeat: Heartbeat, key: bytes = HEARTBEAT_KEY) -> Heartbeat:
    """``heartbeat`` signed with its attempt's secret under the platform key ``key``."""
    secret = attempt_secret(key, heartbeat.user_id, heartbeat.job_id, heartbeat.attempt)
    return sign_heartbeat(heartbeat, secret)


def stream(job_id: str, n: int, *, first: int = 1, **fields: Any) -> list[Heartbeat]:
    return [beat(job_id, seq, **fields) for seq in range(first, first + n)]


def metered(platform: Platform, user_id: str) -> list[Job.UsageMetered]:
    return platform.events_of(user_id, Job.UsageMetered)


def alerts(platform: Platform, user_id: str) -> list[tuple[str, int]]:
    """Every alert raised, as ``("job:<job_id>"|"budget:<period>", threshold)`` in log order."""
    found = []
    jobs = {e.originator_id: e.job_id for e in platform.events_of(user_id, Job.Submitted)}
    for event in platform.events_of(user_id, Job.AlertRaised, Budget.AlertRaised):
        if isinstance(event, Job.AlertRaised):
            found.append((f"{event.scope}:{jobs[event.originator_id]}", event.threshold_pct))
        else:
            found.append((f"budget:{event.period}", event.threshold_pct))
    return found


def feed(worker: LedgerWorker, heartbeats: Iterable[Heartbeat], size: int) -> None:
    """Hand ``heartbeats`` to the worker in batches of ``size``."""
    pending = list(heartbeats)
    for i in range(0, len(pending), size):
        worker.handle(pending[i : i + size])


Feed = Callable[[list[Heartbeat]], None]
