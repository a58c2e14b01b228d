"""The projector on every bucket (folder, fake-gcs-server), with the real event store in the same bucket.

Views must equal a replay from 0 after catching up, after a restart, and when
several projectors (threads here, OS processes below) race on one bucket
while a writer keeps appending.
"""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta

from domain.model import ModelWeights
from projections.audit import audit_partition
from projections.projector import Projector
from projections.replay import apps_on
from storage import Bucket, open_bucket
from storage.eventstore import open_platform, open_user
from storage.layout import PLATFORM
from tests.jobs import submit_tiny_job
from tests.usage import meter

_SPAWN = multiprocessing.get_context("spawn")  # fork would copy the parent's client threads and locks
T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)
U1 = "users/u1"


def _write(bucket: Bucket, jobs: range) -> None:
    """Platform setup (idempotent) and, for each job number, a job run to success with usage."""
    platform = open_platform(bucket)
    if not platform.find_user_by_email("u1@example.com"):
        platform.register_user("u1@example.com", "$argon2$h", "user", T0, user_id="u1")
        platform.set_price("a100-80gb", 2_100_000, T0, T0)
    app = open_user(bucket, "u1")
    if jobs.start == 0:
        app.upload_dataset("d0", "train.jsonl", 100, "0" * 64, T0)
        app.validate_dataset("d0", "chat", 3, {}, T0)
    for n in jobs:
        at = T0 + timedelta(hours=n)
        job_id = f"j{n}"
        submit_tiny_job(app, job_id, at)
        app.queue_job(job_id, at)
        app.start_job(job_id, 1, at)
        for seq in range(3):
            app.report_progress(job_id, 1, seq, 3, None, 1.0 / (seq + 1), seq * 10, at)
            meter(app, job_id, 1, seq, seq, "a100-80gb", 1, 60_000 + n, 2_100_000, "2024-03", at)
        weights = ModelWeights(kind="lora", weights_prefix=f"w/{n}/", sha256="0" * 64, size_bytes=1)
        app.mark_succeeded(job_id, at, weights=weights)


def _audit_clean(bucket: Bucket) -> None:
    for partition in (PLATFORM, U1):
        report = audit_partition(bucket, partition, apps_on(bucket))
        assert report.ok, report


def test_catch_up_and_restart(bucket: Bucket) -> None:
    _write(bucket, range(0, 3))
    projector = Projector(bucket, apps_on(bucket))
    projector.catch_up(PLATFORM)
    projector.catch_up(U1)
    _audit_clean(bucket)
    _write(bucket, range(3, 5))
    restarted = Projector(bucket, apps_on(bucket))
    restarted.catch_up(U1)
    assert restarted.writes < 5 * 4  # only what the new jobs changed, not every view again
    _audit_clean(bucket)


def test_projector_threads_race_a_writer(bucket: Bucket) -> None:
    _write(bucket, range(0, 1))
    stop = threading.Event()
    errors: list[BaseException] = []

    def project() -> None:
        projector = Projector(bucket, apps_on(bucket))
        try:
            while not stop.is_set():
                projector.catch_up(U1)
            projector.catch_up(U1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=project) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        _write(bucket, range(1, 6))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors
    Projector(bucket, apps_on(bucket)).catch_up(PLATFORM)
    _audit_clean(bucket)


def _project_in_a_process(url: str, rounds: int, barrier: object) -> None:
    bucket = open_bucket(url)
    projector = Projector(bucket, apps_on(bucket))
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(rounds):
        projector.catch_up(U1)


def test_projector_processes_race_a_writer(bucket: Bucket) -> None:
    _write(bucket, range(0, 1))
    barrier = _SPAWN.Barrier(4)
    procs = [_SPAWN.Process(target=_project_in_a_process, args=(bucket.url, 30, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    barrier.wait()
    _write(bucket, range(1, 4))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    Projector(bucket, apps_on(bucket)).catch_up(U1)  # the last events may have come after their last round
    Projector(bucket, apps_on(bucket)).catch_up(PLATFORM)
    _audit_clean(bucket)
