"""Lost jobs: 3 intervals without a heartbeat -> lost, billed to the last heartbeat, retried by policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.job import Job, JobState
from domain.money import cost_usd_micros
from runners.ledger import LostJobDetector, watch_running_jobs
from storage.layout import PLATFORM, user_partition
from tests.unit.ledger.builders import A100_PRICE, INTERVAL_S, T0, Platform, beat, stream

MS = INTERVAL_S * 1000


@pytest.fixture
def platform() -> Platform:
    return Platform()


def silent_for(platform: Platform, intervals: float) -> None:
    platform.clock.advance(intervals * INTERVAL_S)


def test_a_quiet_job_is_lost_billed_to_its_last_heartbeat_and_retried(platform: Platform) -> None:
    platform.running_job("u1", "j1", max_retries=2)
    retried: list[tuple[str, str]] = []
    told: list[str] = []
    worker = platform.worker(on_retry=lambda u, j: retried.append((u, j)))
    worker.projector = type("P", (), {"notify": lambda self, p: told.append(p)})()
    worker.handle(stream("j1", 4))
    last_at = beat("j1", 4).at

    silent_for(platform, 3)  # exactly 3 intervals: not yet
    assert worker.sweep() == []
    silent_for(platform, 0.1)
    (lost,) = worker.sweep()

    assert (lost.job_id, lost.attempt, lost.last_heartbeat_at, lost.outcome) == ("j1", 1, last_at, "retrying")
    job = platform.job("u1", "j1")
    assert (job.state, job.attempt) == (JobState.RETRYING, 2)
    # charged to its last heartbeat, nothing for the silence; no checkpoint: all of it credited
    assert job.gpu_ms == 4 * MS and job.credited_gpu_ms == 4 * MS and job.cost_usd_micros == 0
    assert job.credited_usd_micros == cost_usd_micros(4 * MS, 1, A100_PRICE)
    assert retried == [("u1", "j1")] and told[-1] == "users/u1"
    lost_event, faulted, credited, retry_event = platform.events("u1")[-4:]
    assert isinstance(lost_event, Job.Lost) and isinstance(retry_event, Job.Retrying)
    assert (faulted.reason, faulted.checkpoint_gpu_ms) == ("lost", 0)
    assert (credited.attempt, credited.gpu_ms, credited.reason) == (1, 4 * MS, "lost")
    assert lost_event.last_heartbeat_at == last_at
    assert worker.sweep() == []  # handled once
    assert worker.stats.lost == 1


def test_a_lost_attempt_is_credited_exactly_its_gpu_time_past_its_checkpoint(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    app = platform.user_app("u1")
    app.save_checkpoint("j1", 1, 2, "ckpt/2", T0, gpu_ms_total=2 * MS - 1234)  # mid-interval
    worker.handle([beat("j1", 3), beat("j1", 4)])
    silent_for(platform, 4)
    assert [lost.outcome for lost in worker.sweep()] == ["retrying"]
    job = platform.job("u1", "j1")
    assert job.gpu_ms == 4 * MS and job.credited_gpu_ms == 2 * MS + 1234
    assert job.cost_usd_micros == cost_usd_micros(2 * MS - 1234, 1, A100_PRICE)
    assert job.credited_usd_micros == cost_usd_micros(4 * MS, 1, A100_PRICE) - job.cost_usd_micros

    worker.handle([beat("j1", 5)])  # a late heartbeat of the lost attempt: credited in the same commit
    job = platform.job("u1", "j1")
    assert job.gpu_ms == 5 * MS and job.credited_gpu_ms == 3 * MS + 1234
    assert job.cost_usd_micros == cost_usd_micros(2 * MS - 1234, 1, A100_PRICE)
    assert platform.stored_billing("u1") == platform.replayed_billing("u1")
    billing = platform.billing_json("u1")["current_period"]
    assert billing["total_cost_usd_micros"] == job.cost_usd_micros
    assert billing["credited_usd_micros"] == job.credited_usd_micros


def test_retries_exhausted_the_lost_job_fails(platform: Platform) -> None:
    platform.running_job("u1", "j1", max_retries=0)
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    silent_for(platform, 4)
    (lost,) = worker.sweep()
    job = platform.job("u1", "j1")
    assert lost.outcome == job.state == JobState.FAILED
    assert "no retries left" in job.error


def test_a_lost_job_that_was_stopping_ends_stopped_with_its_reason(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    platform.user_app("u1").request_stop("j1", "budget_exceeded", T0)
    silent_for(platform, 4)
    (lost,) = worker.sweep()
    job = platform.job("u1", "j1")
    assert lost.outcome == job.state == JobState.STOPPED and job.stop_reason == "budget_exceeded"


def test_progress_reports_keep_a_job_alive_when_heartbeats_do_not_reach_the_ledger(
    platform: Platform,
) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 1))
    silent_for(platform, 4)
    platform.user_app("u1").report_progress("j1", 1, 5, 10, None, 1.0, 50, platform.clock())
    assert worker.sweep() == []
    assert platform.job("u1", "j1").state == JobState.RUNNING
    silent_for(platform, 4)
    assert [lost.job_id for lost in worker.sweep()] == ["j1"]


def test_a_job_that_finished_or_moved_on_is_forgotten_not_lost(platform: Platform) -> None:
    for job_id in ("done", "moved"):
        platform.running_job("u1", job_id)
    worker = platform.worker()
    worker.handle(stream("done", 2) + stream("moved", 2))
    app = platform.user_app("u1")
    app.mark_succeeded("done", T0)
    app.mark_lost("moved", None, T0)  # the dispatcher saw its runner exit first
    app.retry_job("moved", 2, "runner exited", T0)
    silent_for(platform, 4)
    assert worker.sweep() == []
    assert len(worker.live) == 0
    assert (app.get_job("moved").state, app.get_job("moved").attempt) == (JobState.RETRYING, 2)


def test_a_watched_attempt_that_never_beats_is_lost_after_three_intervals(platform: Platform) -> None:
    platform.running_job("u1", "j1", interval_s=2)
    worker = platform.worker()
    worker.watch("u1", "j1", 1, interval_s=2)
    silent_for(platform, 0.5)  # 5 s < 3 x 2 s
    assert worker.sweep() == []
    silent_for(platform, 0.2)  # 7 s
    assert [lost.last_heartbeat_at for lost in worker.sweep()] == [T0]  # Started's time


def test_after_a_restart_running_jobs_are_watched_from_the_views(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    platform.running_job("u1", "j2")
    platform.user_app("u1").mark_succeeded("j2", T0)
    platform.platform.register_user("a@example.com", "hash", "user", T0, user_id="u1")
    for partition in (PLATFORM, user_partition("u1")):
        platform.projector.catch_up(partition)

    detector = LostJobDetector(platform.user_app, platform.worker().live)
    assert watch_running_jobs(detector, platform.bucket, platform.clock()) == 1
    silent_for(platform, 4)
    assert [(lost.job_id, lost.outcome) for lost in detector.sweep(platform.clock())] == [("j1", "retrying")]


def test_a_late_heartbeat_of_a_lost_attempt_is_still_its_gpu_time(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    silent_for(platform, 4)
    worker.sweep()
    worker.handle([beat("j1", 3, at=T0 + timedelta(seconds=30))])  # a runner that was only cut off
    assert platform.job("u1", "j1").gpu_ms == 3 * MS


def test_after_a_restart_running_jobs_get_the_transports_hold_back_before_they_are_lost(
    platform: Platform,
) -> None:
    """Pub/Sub holds a dead ledger's unacked heartbeats (and the job's later ones, behind them on
    its ordering key) for the ack deadline: a restarted ledger must not find the job lost meanwhile."""
    platform.running_job("u1", "j1")
    platform.platform.register_user("a@example.com", "hash", "user", T0, user_id="u1")
    for partition in (PLATFORM, user_partition("u1")):
        platform.projector.catch_up(partition)

    detector = LostJobDetector(platform.user_app, platform.worker().live)
    grace = timedelta(seconds=60)
    assert watch_running_jobs(detector, platform.bucket, platform.clock(), grace=grace) == 1
    silent_for(platform, 4)
    assert detector.sweep(platform.clock()) == []  # the heartbeats may be held back still
    silent_for(platform, 100)
    assert [(lost.job_id, lost.outcome) for lost in detector.sweep(platform.clock())] == [("j1", "retrying")]


def test_a_lost_job_that_was_pausing_ends_paused_at_its_checkpoint(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    app = platform.user_app("u1")
    app.save_checkpoint("j1", 1, 2, "ckpt/2", T0, gpu_ms_total=2 * MS)
    app.request_pause("j1", T0)
    silent_for(platform, 4)
    (lost,) = worker.sweep()
    job = platform.job("u1", "j1")
    assert lost.outcome == job.state == JobState.PAUSED and job.step == 2
    assert job.attempt == 1  # no retry: the resume starts the next attempt


def test_a_paused_job_is_billed_nothing_while_paused_and_never_found_lost(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle([*stream("j1", 3), beat("j1", 4, final=True)])  # attempt 1 ends with its pause
    app = platform.user_app("u1")
    app.request_pause("j1", T0)
    app.mark_paused("j1", T0)
    metered_before = platform.job("u1", "j1").gpu_ms

    silent_for(platform, 20)  # paused for 20 intervals: no runner, no heartbeat
    assert worker.sweep() == [] and len(worker.live) == 0
    for partition in (PLATFORM, user_partition("u1")):
        platform.projector.catch_up(partition)
    platform.platform.register_user("a@example.com", "hash", "user", T0, user_id="u1")
    platform.projector.catch_up(PLATFORM)
    assert watch_running_jobs(LostJobDetector(platform.user_app, worker.live), platform.bucket, T0) == 0
    job = platform.job("u1", "j1")
    assert (job.state, job.gpu_ms) == (JobState.PAUSED, metered_before) and metered_before == 4 * MS

    app.resume_job("j1", T0)
    app.start_job("j1", 2, platform.clock())
    resumed_at = platform.clock()
    worker.handle(  # the resumed attempt's heartbeats: its own GPU ms, counted from its start
        [beat("j1", seq, attempt=2, at=resumed_at + timedelta(seconds=seq * INTERVAL_S)) for seq in (1, 2)]
    )
    job = platform.job("u1", "j1")
    assert job.gpu_ms == 4 * MS + 2 * MS  # GPU ms metered while paused: 0
    assert job.cost_usd_micros == cost_usd_micros(6 * MS, 1, A100_PRICE) and job.credited_gpu_ms == 0
