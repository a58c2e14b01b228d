"""Fenced attempts: a runner's report whose attempt or lease is not the current attempt's is refused
(``superseded``); the control plane's own commands are not fenced; one attempt starts once."""

from __future__ import annotations

import pytest

from domain.errors import Conflict
from domain.job import SUPERSEDED, Job, JobState
from domain.placement import Placement
from tests.jobs import new_job
from tests.unit.domain.conftest import at

T4 = Placement(gpu_type="t4", gpu_count=1, node="n1")


def running(lease: str = "L1") -> Job:
    job = new_job(at(0))
    job.queue(at(1))
    job.start(1, at(2), lease=lease, placement=T4)
    return job


def superseded(action) -> Conflict:  # type: ignore[no-untyped-def]
    with pytest.raises(Conflict) as caught:
        action()
    assert caught.value.code == SUPERSEDED and "job_1" in caught.value.message
    assert "superseded" in caught.value.message
    return caught.value


def test_started_records_the_lease_and_the_placement() -> None:
    job = running()
    assert job.lease == "L1" and job.placement == {"gpu_type": "t4", "gpu_count": 1, "node": "n1"}
    assert job.attempts["1"]["lease"] == "L1" and job.attempts["1"]["gpu_type"] == "t4"


def test_every_runner_report_with_another_lease_is_refused_and_records_nothing() -> None:
    job = running()
    version = job.version
    superseded(lambda: job.report_progress(1, 3, 10, 0.1, 1.0, 30, at(3), lease="L2"))
    superseded(lambda: job.report_activity(1, "converting", at(3), lease="L2"))
    superseded(lambda: job.save_checkpoint(1, 3, "users/usr_1/jobs/job_1/checkpoints/3/", at(3), lease="L2"))
    superseded(lambda: job.mark_stopped(at(3), lease="L2"))
    superseded(lambda: job.mark_succeeded(at(3), lease="L2"))
    superseded(lambda: job.mark_failed("boom", at(3), lease="L2"))
    superseded(lambda: job.retry(2, "interrupted", at(3), lease="L2"))
    assert job.version == version and job.state == JobState.RUNNING
    job.report_progress(1, 3, 10, 0.1, 1.0, 30, at(3), lease="L1")  # the current runner's
    assert job.step == 3


def test_a_report_of_an_earlier_attempt_is_superseded() -> None:
    job = running()
    job.mark_lost(None, at(3))
    job.retry(2, "lost", at(4))  # the control plane: no lease
    assert job.lease is None  # the announced attempt has not started
    superseded(lambda: job.report_progress(1, 3, 10, 0.1, 1.0, 30, at(5), lease="L1"))
    superseded(lambda: job.mark_failed("late", at(5), lease="L1"))
    job.start(2, at(6), lease="L3", placement=T4)
    superseded(lambda: job.save_checkpoint(1, 4, "users/usr_1/jobs/job_1/checkpoints/4/", at(7), lease="L1"))
    job.save_checkpoint(2, 4, "users/usr_1/jobs/job_1/checkpoints/4/", at(7), lease="L3")


def test_a_second_runner_of_one_attempt_cannot_start_it() -> None:
    job = running("L1")
    superseded(lambda: job.start(1, at(3), lease="L2", placement=T4))
    assert job.lease == "L1" and job.attempts["1"]["lease"] == "L1"


def test_the_control_plane_is_not_fenced() -> None:
    job = running()
    job.request_stop("budget_exceeded", at(3))
    job.mark_lost(None, at(4))
    job.mark_stopped(at(5))  # the dispatcher, no lease
    assert job.state == JobState.STOPPED
