"""The job runner when its control plane is gone or its attempt superseded (fake trainer).

- a broken heartbeat pipe (``tune serve`` killed): the trainer checkpoints and stops, the attempt
  ends ``retrying`` for the platform's fault, every undelivered heartbeat (the final one included)
  is written to the attempt's spool as it was signed, and the log and cleanup still happen;
- metering that stalls while heartbeats go out (a transport with no reply): the same;
- superseded (the job moved on to another attempt): the trainer is killed at once and nothing
  more is recorded.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from domain.applications import UserApp
from domain.job import JobState
from runners.job_runner import CONTROL_PLANE_GONE, JobRunner, Outcome
from storage import LocalBucket, layout
from storage.heartbeats import Heartbeat, HeartbeatPublisher, decode_heartbeat, verify_heartbeat
from tests.unit.runners.builders import RecordingPublisher, now, wait_for
from tests.usage import meter

JOB = "users/usr_1/jobs/job_1/"
SECRET = "attempt-secret"
SPOOL = layout.unsent_heartbeats("usr_1", "job_1", 1)


class BreakingPipe(HeartbeatPublisher):
    """Delivers heartbeats until ``broken`` is set, then raises BrokenPipeError like a dead reader's pipe."""

    def __init__(self) -> None:
        self.delivered: list[Heartbeat] = []
        self.broken = threading.Event()
        self.broke_at: float | None = None

    def publish(self, heartbeat: Heartbeat) -> None:
        if self.broken.is_set():
            self.broke_at = self.broke_at or time.monotonic()
            raise BrokenPipeError(32, "Broken pipe")
        self.delivered.append(heartbeat)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class MeteringUntil(RecordingPublisher):
    """A ledger that meters every heartbeat it gets until ``dead`` is set; publishing still succeeds."""

    def __init__(self, app: UserApp) -> None:
        super().__init__()
        self.app = app
        self.dead = threading.Event()
        self.metered_ms = 0  # heartbeats carry the attempt's cumulative GPU ms: meter the increase

    def publish(self, heartbeat: Heartbeat) -> None:
        super().publish(heartbeat)
        if not self.dead.is_set():
            at, increase = heartbeat.at, max(0, heartbeat.gpu_ms_total - self.metered_ms)
            self.metered_ms += increase
            meter(
                self.app,
                heartbeat.job_id,
                heartbeat.attempt,
                heartbeat.seq,
                heartbeat.seq,
                "cpu",
                1,
                increase,
                1_000_000,
                at.strftime("%Y-%m"),
                at,
            )


def spooled(bucket: LocalBucket) -> list[Heartbeat]:
    return [decode_heartbeat(line) for line in bucket.read(SPOOL).splitlines()]


def when_training(app: UserApp, act) -> None:  # type: ignore[no-untyped-def]
    def wait_then_act() -> None:
        wait_for(lambda: app.get_job("job_1").step >= 3, what="progress")
        act()

    threading.Thread(target=wait_then_act, daemon=True).start()


@pytest.fixture
def long_job(queued_job, monkeypatch):  # type: ignore[no-untyped-def]
    """A 400-step job_1 at 0.05 s a step, checkpoints only when stopped, one retry."""
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    return queued_job(max_steps=400, checkpoint_every_steps=1000)


def test_a_broken_heartbeat_pipe_checkpoints_stops_retries_and_spools_what_was_not_delivered(
    long_job, make_runner, app: UserApp, local_bucket: LocalBucket, tmp_path: Path
) -> None:
    pipe = BreakingPipe()
    runner: JobRunner = make_runner(publisher=pipe, heartbeat_secret=SECRET)
    when_training(app, pipe.broken.set)
    began = time.monotonic()
    assert runner.run() is Outcome.RETRYING
    assert pipe.broke_at is not None and time.monotonic() - began < 60

    job = app.get_job("job_1")
    assert (job.state, job.attempt) == (JobState.RETRYING, 2)
    assert (job.error or "").startswith(CONTROL_PLANE_GONE), job.error
    assert "heartbeat channel is closed (BrokenPipeError" in (job.error or "")
    # it stopped with a checkpoint of its own attempt, where the next attempt resumes
    assert job.last_checkpoint is not None and 3 <= job.last_checkpoint.step < 400
    assert job.last_checkpoint.path == f"{JOB}attempts/1/checkpoints/{job.last_checkpoint.step}/"
    assert local_bucket.exists(job.last_checkpoint.path + "trainer_state.json")

    # nothing lost: what was not delivered is in the spool, signed as it was, the final one last
    unsent = spooled(local_bucket)
    delivered = [h.seq for h in pipe.delivered]
    assert delivered == list(range(1, len(delivered) + 1))
    assert [h.seq for h in unsent] == list(range(len(delivered) + 1, len(delivered) + len(unsent) + 1))
    assert unsent[-1].final and not any(h.final for h in unsent[:-1])
    assert all(verify_heartbeat(h, SECRET) for h in unsent)
    assert unsent[-1].gpu_ms_total == runner.emitter.gpu_ms > 0  # the final one settles the attempt

    log = local_bucket.read(f"{JOB}attempts/1/job.log").decode()
    assert f"{CONTROL_PLANE_GONE}: its heartbeat channel is closed" in log
    assert f"{len(unsent)} heartbeat(s) could not be delivered: written to {SPOOL}" in log
    assert not (tmp_path / "work" / "job_1-1").exists()  # cleaned up


def test_metering_that_stalls_while_heartbeats_go_out_ends_the_attempt_for_the_platforms_fault(
    long_job, make_runner, app: UserApp, local_bucket: LocalBucket
) -> None:
    ledger = MeteringUntil(app)
    runner: JobRunner = make_runner(publisher=ledger, metering_stall_s=0.5)
    when_training(app, ledger.dead.set)
    assert runner.run() is Outcome.RETRYING

    job = app.get_job("job_1")
    assert job.state == JobState.RETRYING and (job.error or "").startswith(CONTROL_PLANE_GONE)
    assert "nothing metered for" in (job.error or "")
    assert job.last_checkpoint is not None and job.last_checkpoint.path.startswith(f"{JOB}attempts/1/")
    assert not local_bucket.exists(SPOOL)  # every heartbeat was delivered (only never metered)


def test_a_runner_no_ledger_ever_metered_trains_on(queued_job, make_runner, app: UserApp) -> None:
    """Metering that never began is no stall (e.g. no ledger reads this transport yet)."""
    queued_job()
    assert make_runner(metering_stall_s=0.0).run() is Outcome.SUCCEEDED


def test_with_no_retries_left_a_control_plane_loss_stops_the_job_rather_than_failing_it(
    queued_job, make_runner, app: UserApp, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    queued_job(max_steps=400, checkpoint_every_steps=1000, max_retries=0)
    pipe = BreakingPipe()
    when_training(app, pipe.broken.set)
    assert make_runner(publisher=pipe).run() is Outcome.STOPPED
    job = app.get_job("job_1")
    assert job.state == JobState.STOPPED and (job.stop_reason or "").startswith(CONTROL_PLANE_GONE)


def test_a_superseded_attempt_is_killed_at_once_and_records_nothing(
    long_job, make_runner, app: UserApp, local_bucket: LocalBucket, publisher: RecordingPublisher
) -> None:
    def supersede() -> None:
        app.mark_lost("job_1", None, now())
        app.retry_job("job_1", 2, "the runner was lost", now())

    runner: JobRunner = make_runner()
    when_training(app, supersede)
    assert runner.run() is Outcome.ABANDONED

    job = app.get_job("job_1")
    assert (job.state, job.attempt, job.last_checkpoint) == (JobState.RETRYING, 2, None)
    assert not list(local_bucket.list(f"{JOB}attempts/1/checkpoints/"))  # killed, not checkpointed
    assert publisher.of("job_1", 1)[-1].final
    assert "abandoning attempt 1" in local_bucket.read(f"{JOB}attempts/1/job.log").decode()
