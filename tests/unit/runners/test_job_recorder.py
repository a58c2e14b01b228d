"""The job recorder: lost races are tried again, the retry budget decides retry or failure."""

from __future__ import annotations

from typing import Any

import pytest

from domain.applications import UserApp
from domain.errors import Conflict
from domain.job import JobState
from runners.job_recorder import JobRecorder
from storage import LocalBucket
from tests.unit.runners.builders import now, seed_dataset, submit_job


@pytest.fixture
def running(local_bucket: LocalBucket, app: UserApp) -> UserApp:
    seed_dataset(local_bucket, app)
    submit_job(app, max_retries=1)
    app.queue_job("job_1", now())
    app.start_job("job_1", 1, now())
    return app


class RacingApp:
    """A UserApp whose next ``n`` writes lose a race to another writer."""

    def __init__(self, app: UserApp, n: int) -> None:
        self.app, self.n = app, n

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.app, name)
        if name == "get_job":
            return method

        def racing(*args: Any, **kwargs: Any) -> Any:
            if self.n > 0:
                self.n -= 1
                raise Conflict("another write reached this object first", code="version_conflict")
            return method(*args, **kwargs)

        return racing


def test_a_write_that_loses_a_race_is_tried_again(running: UserApp) -> None:
    recorder = JobRecorder(RacingApp(running, 3), "job_1", 1)  # type: ignore[arg-type]
    assert recorder.progress(5, 10, 0.5, 1.25, 300).step == 5


def test_other_refusals_are_not_retried(running: UserApp) -> None:
    calls: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls.append(1)
            return getattr(running, name)

    with pytest.raises(Conflict, match="cannot start"):
        JobRecorder(Counting(), "job_1", 1).started()  # type: ignore[arg-type]
    assert len(calls) == 1


def test_retries_run_while_the_budget_allows_then_the_job_fails(running: UserApp) -> None:
    recorder = JobRecorder(running, "job_1", 1)
    job = recorder.retry_or_fail("trainer killed", max_retries=1)
    assert (job.state, job.attempt, job.error) == (JobState.RETRYING, 2, "trainer killed")

    second = JobRecorder(running, "job_1", 2)
    second.started()
    job = second.retry_or_fail("trainer killed again", max_retries=1)
    assert job.state == JobState.FAILED
    assert job.error == "trainer killed again (attempt 2 of 2; no retries left)"


def test_an_attempt_is_current_only_while_its_job_runs_it(running: UserApp) -> None:
    recorder = JobRecorder(running, "job_1", 1)
    assert recorder.is_current(recorder.view())
    assert not JobRecorder(running, "job_1", 2).is_current(recorder.view())
    running.mark_lost("job_1", None, now())
    assert not recorder.is_current(recorder.view())
