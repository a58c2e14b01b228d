"""A long-lived aggregate (10,000 events) loads from its latest snapshot, kept in the bucket."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from storage import Bucket, open_bucket
from storage.eventstore import open_application

PARTITION = "users/u1/events/"
EVENTS = 10_000
PER_SAVE = 100


class Run(Aggregate):
    """Stands for a job reporting progress many times."""

    @event("Started")
    def __init__(self) -> None:
        self.steps = 0
        self.tokens = 0

    @event("ProgressReported")
    def report(self, step: int, tokens: int) -> None:
        self.steps = step
        self.tokens += tokens


class Runs(Application[UUID]):
    snapshotting_intervals: ClassVar = {Run: 1000}


class RunsWithoutSnapshots(Application[UUID]):
    name = "Runs"


def write_long_run(app: Runs) -> UUID:
    run = Run()
    for step in range(1, EVENTS):
        run.report(step, 3)
        if run.version % PER_SAVE == 0:
            app.save(run)
    app.save(run)
    return run.id


def load_counting(app: Application[UUID], run_id: UUID) -> tuple[int, Run]:
    """Load the run; how many stored events (snapshots included) the load decoded."""
    decoded = 0
    original = app.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return original(stored)

    app.mapper.to_domain_event = counting  # type: ignore[method-assign]
    try:
        run: Run = app.repository.get(run_id)
    finally:
        del app.mapper.to_domain_event
    return decoded, run


def test_a_run_with_10000_events_loads_from_its_latest_snapshot(bucket: Bucket) -> None:
    run_id = write_long_run(open_application(Runs, bucket, PARTITION))
    fresh = open_bucket(bucket.url)  # another process: nothing cached

    snapshotted = open_application(Runs, fresh, PARTITION)
    cold, run = load_counting(snapshotted, run_id)
    warm, run_again = load_counting(snapshotted, run_id)
    full, replayed = load_counting(open_application(RunsWithoutSnapshots, fresh, PARTITION), run_id)

    assert (run.version, run.steps, run.tokens) == (EVENTS, EVENTS - 1, 3 * (EVENTS - 1))
    assert (replayed.version, replayed.tokens) == (run.version, run.tokens)
    assert run_again.version == EVENTS
    assert (cold, warm, full) == (1, 1, EVENTS)  # the latest snapshot alone, against every event
    assert snapshotted.snapshots is not None
    latest = snapshotted.snapshots.recorder.select_events(run_id, desc=True, limit=1)
    assert latest[0].originator_version == EVENTS
    assert len(list(fresh.list(f"{PARTITION}snapshots/"))) == EVENTS // 1000
