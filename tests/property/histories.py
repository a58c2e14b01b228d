"""Random valid histories for the property tests, made through the real service layer.

``user_command`` and ``platform_command`` are hypothesis strategies of commands;
``UserDriver`` and ``PlatformDriver`` apply one to a ``UserApp`` / ``PlatformApp``,
choosing among the moves the object's current state allows (the domain has the final
word: a caller skips the commands it refuses, so every stored sequence is one the
platform could have written). ``("catch_up",)`` and ``("restart",)`` are left to the
caller (a projector's doing, not the application's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from hypothesis import strategies as st

from domain.applications import PlatformApp, UserApp
from domain.budget import Budget
from domain.errors import NotFound, PlatformError
from domain.job import Job
from domain.model import ModelWeights
from domain.money import period_of
from projections.projector import Projector
from storage.memory import MemoryBucket
from tests.usage import meter

__all__ = [
    "DATASETS",
    "GPUS",
    "JOBS",
    "SHA",
    "PlatformDriver",
    "UserDriver",
    "platform_command",
    "play",
    "step",
    "user_command",
]

SHA = "0" * 64
JOBS = ["j0", "j1", "j2"]
DATASETS = ["d0", "d1"]
GPUS = ["a100-80gb", "t4"]

ids = st.sampled_from
param = st.integers(0, 10**9)
job_command = st.tuples(st.just("job"), ids(JOBS), st.integers(0, 20), param)
user_command = st.one_of(
    *[job_command] * 6,
    st.tuples(st.just("dataset"), st.just("d1"), st.integers(0, 3)),  # d0 is validated up front and kept
    st.tuples(st.just("budget"), st.one_of(st.none(), st.integers(1, 30_000_000))),
    st.tuples(st.just("budget_alert"), st.sampled_from([50, 80, 100])),
    st.tuples(st.sampled_from(["catch_up", "restart"])),
)
platform_command = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(["u1", "u2", "u3"])),
    st.tuples(
        st.sampled_from(["login", "suspend", "reactivate", "quota", "password", "revoke"]),
        st.sampled_from(["u1", "u2", "u3"]),
    ),
    st.tuples(st.just("price"), ids(GPUS), st.integers(1, 5_000_000)),
    st.tuples(st.sampled_from(["add_model", "remove_model"]), st.sampled_from(["tiny", "smol"])),
    st.tuples(st.sampled_from(["catch_up", "restart"])),
)
step = st.integers(1, 6 * 24 * 3600)  # seconds between commands: up to six days, so months roll over

# what may happen next to a job in each state (the domain has the final word)
NEXT = {
    None: ["submit"],
    "submitted": ["queue", "queue", "queue", "stop"],
    "queued": ["start", "start", "start", "start", "stop", "fail"],
    "running": [
        "progress",
        "progress",
        "meter",
        "meter",
        "meter",
        "checkpoint",
        "job_alert",
        "stop",
        "succeed",
        "succeed",
        "fail",
        "retry",
        "lost",
    ],
    "stopping": ["mark_stopped", "meter", "succeed", "fail", "lost"],
    "retrying": ["start", "stop", "fail"],
    "lost": ["retry", "fail", "stop"],
    "succeeded": ["meter", "delete_model"],
    "failed": ["meter"],
    "stopped": ["meter"],
}
DATASET_NEXT = {
    None: ["upload"],
    "uploaded": ["validate", "validate", "reject"],
    "validated": ["delete"],
    "rejected": ["delete"],
    "deleted": [],
}


class UserDriver:
    """Drives a UserApp: each command picks one of the moves the object's state allows."""

    def __init__(self, app: UserApp) -> None:
        self.app = app
        self.seq: dict[str, int] = {}

    def __call__(self, command: tuple[Any, ...], at: datetime) -> None:
        kind, *args = command
        app = self.app
        if kind == "budget":
            app.set_budget(args[0], at)
        elif kind == "budget_alert":
            _write(
                app,
                Budget.create_id(app.user_id),
                lambda b: b.raise_alert(period_of(at), args[0], 30_000_000, at),
            )
        elif kind == "dataset":
            self._dataset(args[0], args[1], at)
        elif kind == "job":
            self._job(*args, at=at)

    def _dataset(self, dataset_id: str, choice: int, at: datetime) -> None:
        try:
            status: str | None = self.app.get_dataset(dataset_id).status
        except NotFound:
            status = None
        moves = DATASET_NEXT[status]
        if not moves:
            return
        move = moves[choice % len(moves)]
        if move == "upload":
            self.app.upload_dataset(dataset_id, "train.jsonl", 100, SHA, at)
        elif move == "validate":
            self.app.validate_dataset(dataset_id, "chat", 3, {"tokens": 30}, at)
        elif move == "reject":
            self.app.reject_dataset(dataset_id, [{"line": 1, "message": "bad"}], at)
        else:
            self.app.delete_dataset(dataset_id, [], at)

    def _job(self, job_id: str, choice: int, n: int, *, at: datetime) -> None:
        app = self.app
        try:
            job = app.get_job(job_id)
        except NotFound:
            gpu = GPUS[n % 2]
            app.submit_job(
                job_id=job_id,
                model_id=f"m-{job_id}",
                base_model="tiny",
                dataset_id=DATASETS[1] if n % 5 == 0 else DATASETS[0],
                config={},
                gpu_type=gpu,
                gpu_count=1 + n % 3,
                at=at,
                max_cost_usd_micros=20_000_000,
                estimate_usd_micros=1000,
            )
            return
        moves = NEXT[str(job.state)]
        move = moves[choice % len(moves)]
        if move == "queue":
            app.queue_job(job_id, at)
        elif move == "start":
            app.start_job(job_id, job.attempt + (1 if job.state == "queued" else 0), at)
        elif move == "stop":
            app.request_stop(job_id, "user asked", at)
        elif move == "mark_stopped":
            app.mark_stopped(job_id, at)
        elif move == "succeed":
            weights = ModelWeights(kind="lora", weights_prefix=f"w/{job_id}/", sha256=SHA, size_bytes=10)
            app.mark_succeeded(job_id, at, metrics={"loss": 0.1}, weights=weights if n % 2 else None)
        elif move == "fail":
            app.mark_failed(job_id, "boom", at)
        elif move == "retry":
            app.retry_job(job_id, job.attempt + 1, "preempted", at)
        elif move == "lost":
            app.mark_lost(job_id, at - timedelta(minutes=5), at)
        elif move == "progress":
            app.report_progress(
                job_id, job.attempt, job.step + n % 50, 100, None, (n % 1000) / 100, n % 5000, at
            )
        elif move == "checkpoint":
            app.save_checkpoint(job_id, job.attempt, job.step, f"ckpt/{job.step}/", at)
        elif move == "meter":
            key = f"{job_id}:{job.attempt}"
            first = self.seq.get(key, -1) + 1
            late = n % 5 == 0  # a batch for the previous month, arriving after it closed
            period = period_of(at - timedelta(days=31) if late else at)
            ms, price = n % 7_200_001, (n // 7_200_001) % 5_000_000
            meter(
                app, job_id, job.attempt, first, first + 2, job.gpu_type, job.gpu_count, ms, price, period, at
            )
            self.seq[key] = first + 2
        elif move == "job_alert":
            _write(app, Job.create_id(job_id), lambda j: j.raise_alert("job", (50, 80, 100)[n % 3], 1, 2, at))
        elif move == "delete_model":
            app.delete_model(f"m-{job_id}", [], at)


def _write(app: UserApp, aggregate_id: Any, action: Callable[[Any], None]) -> None:
    """Act on one aggregate and save it (alerts: the ledger raises them inside ``UserApp.meter_usage``)."""
    try:
        aggregate = app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        raise NotFound("no such aggregate") from None
    action(aggregate)
    app.save(aggregate)


class PlatformDriver:
    def __init__(self, app: PlatformApp) -> None:
        self.app = app

    def __call__(self, command: tuple[Any, ...], at: datetime) -> None:
        kind, *args = command
        app = self.app
        if kind == "register":
            app.register_user(f"{args[0]}@example.com", "$argon2$h", "user", at, user_id=args[0])
        elif kind == "login":
            app.record_login(args[0], at)
        elif kind == "suspend":
            app.suspend_user(args[0], "overdue", at)
        elif kind == "reactivate":
            app.reactivate_user(args[0], at)
        elif kind == "quota":
            app.set_quota(args[0], 3, 1000, at)
        elif kind == "password":
            app.change_password(args[0], "$argon2$h2", at)
        elif kind == "revoke":
            app.revoke_tokens(args[0], "by an operator", at)
        elif kind == "price":
            app.set_price(args[0], args[1], at, at)
        elif kind == "add_model":
            app.add_base_model(args[0], "builtin", args[0], at)
        elif kind == "remove_model":
            app.remove_base_model(args[0], at)


def play(
    partition: str,
    app: Any,
    driver: Callable[[tuple[Any, ...], datetime], None],
    commands: list[tuple[tuple[Any, ...], int]],
    caught_up: Callable[[MemoryBucket], None] = lambda bucket: None,
) -> MemoryBucket:
    """The bucket after ``commands`` (each ``seconds`` after the one before) with a projector on it.

    ``("catch_up",)`` catches the projector up, then calls ``caught_up(bucket)``; ``("restart",)``
    starts a new projector; others go to ``driver`` (those the domain refuses write nothing). The
    projector catches up once more at the end.
    """
    bucket = MemoryBucket()
    projector = Projector(bucket, lambda _: app)
    at = datetime(2024, 1, 30, tzinfo=UTC)
    for command, seconds in commands:
        at += timedelta(seconds=seconds)
        if command == ("catch_up",):
            projector.catch_up(partition)
            caught_up(bucket)
        elif command == ("restart",):
            projector = Projector(bucket, lambda _: app)
        else:
            with contextlib.suppress(PlatformError):  # refused by the domain: nothing was written
                driver(command, at)
    projector.catch_up(partition)
    return bucket
