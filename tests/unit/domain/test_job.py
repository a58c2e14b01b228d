"""The job state machine: every allowed move, every refusal (which records nothing), metering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.errors import Conflict, ValidationFailed
from domain.job import TRANSITIONS, Job, JobState
from domain.money import cost_usd_micros
from tests.unit.domain.conftest import at, refused, refused_field, submit_job

S = JobState


def names(job: Job) -> list[str]:
    return [type(e).__name__ for e in job.pending_events]


def test_submit_records_everything_the_job_needs(make_job: Callable[..., Job]) -> None:
    job = make_job()
    assert job.id == Job.create_id("job_1")
    assert (job.state, job.attempt, job.version) == (S.SUBMITTED, 0, 1)
    assert (job.gpu_type, job.gpu_count, job.max_cost_usd_micros) == ("h100-80gb", 2, 5_000_000)
    (event,) = job.pending_events
    assert isinstance(event, Job.Submitted)
    assert event.at == at() == event.timestamp  # the library's timestamp is the caller's time


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"job_id": "../etc"}, "job_id"),
        ({"gpu_type": "H100"}, "gpu_type"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": 17}, "gpu_count"),
        ({"max_cost_usd_micros": -1}, "max_cost_usd_micros"),
        ({"at": at().replace(tzinfo=None)}, "at"),
    ],
)
def test_submit_refuses_bad_fields(override: dict[str, Any], where: str) -> None:
    assert refused_field(submit_job, override) == where


def test_happy_path_queued_running_succeeded(running_job: Job) -> None:
    job = running_job
    job.report_progress(1, 10, 100, 0.1, 2.5, 1000, at(3))
    job.save_checkpoint(1, 10, "users/usr_1/jobs/job_1/checkpoints/10", at(4))
    job.mark_succeeded(at(5), metrics={"loss": 1.2})
    assert job.state == S.SUCCEEDED
    assert (job.step, job.loss, job.checkpoint["step"], job.finished_at) == (10, 2.5, 10, at(5))
    assert names(job) == [
        "Submitted",
        "Queued",
        "Started",
        "ProgressReported",
        "CheckpointSaved",
        "Succeeded",
    ]


def test_stop_request_then_stopped_keeps_the_reason(running_job: Job) -> None:
    running_job.request_stop("user asked", at(3))
    assert running_job.state == S.STOPPING
    running_job.mark_stopped(at(4), step=7)
    assert (running_job.state, running_job.stop_reason, running_job.step) == (S.STOPPED, "user asked", 7)


@pytest.mark.parametrize("prepare", ["submitted", "queued"])
def test_stopping_a_job_that_is_not_running_cancels_it(make_job: Callable[..., Job], prepare: str) -> None:
    job = make_job()
    if prepare == "queued":
        job.queue(at(1))
    job.request_stop("changed my mind", at(2))
    assert job.state == S.STOPPED
    assert names(job)[-1] == "Stopped"


def test_retry_resumes_with_the_next_attempt(running_job: Job) -> None:
    running_job.retry(2, "CUDA error", at(3))
    assert (running_job.state, running_job.attempt) == (S.RETRYING, 2)
    with refused(running_job, Conflict, "next attempt is 2"):
        running_job.start(1, at(4))
    running_job.start(2, at(4))
    assert running_job.state == S.RUNNING
    assert running_job.started_at == at(2)  # the first start


def test_lost_then_retried_or_failed(running_job: Job) -> None:
    running_job.mark_lost(at(2), at(10))
    assert running_job.state == S.LOST
    with refused(running_job, Conflict, "cannot start"):
        running_job.start(2, at(11))
    running_job.retry(2, "runner lost", at(11))
    running_job.start(2, at(12))
    running_job.mark_lost(None, at(20))
    running_job.mark_failed("lost twice", at(21))
    assert (running_job.state, running_job.error) == (S.FAILED, "lost twice")


@pytest.mark.parametrize(
    ("command", "allowed_from"),
    [
        (lambda j: j.queue(at(9)), {S.SUBMITTED}),
        (lambda j: j.mark_succeeded(at(9)), {S.RUNNING, S.STOPPING, S.PAUSING}),
        (
            lambda j: j.mark_failed("boom", at(9)),
            {S.QUEUED, S.RUNNING, S.STOPPING, S.RETRYING, S.LOST, S.PAUSING},
        ),
        (lambda j: j.mark_lost(None, at(9)), {S.RUNNING, S.STOPPING, S.PAUSING}),
        (
            lambda j: j.mark_stopped(at(9)),
            {S.RUNNING, S.STOPPING, S.SUBMITTED, S.QUEUED, S.RETRYING, S.LOST, S.PAUSED},
        ),
        (
            lambda j: j.request_pause(at(9)),
            {S.SUBMITTED, S.QUEUED, S.RUNNING, S.RETRYING, S.LOST},
        ),
        (lambda j: j.mark_paused(at(9)), {S.PAUSING, S.LOST}),
        (lambda j: j.resume(at(9)), {S.PAUSED}),
    ],
)
def test_each_move_is_refused_from_every_other_state(
    command: Callable[[Job], None], allowed_from: set[S]
) -> None:
    for state in JobState:
        job = job_in(state)
        if state in allowed_from:
            command(job)
        else:
            with refused(job, Conflict, f"is {state}"):
                command(job)


def test_terminal_states_accept_nothing_but_late_usage() -> None:
    for state in (S.SUCCEEDED, S.FAILED, S.STOPPED):
        job = job_in(state)
        assert TRANSITIONS[state] == frozenset()
        for command in (
            lambda j: j.queue(at(9)),
            lambda j: j.start(1, at(9)),
            lambda j: j.request_stop("x", at(9)),
            lambda j: j.retry(2, "x", at(9)),
            lambda j: j.report_progress(1, 1, None, None, None, 0, at(9)),
        ):
            with refused(job, Conflict):
                command(job)
        job.meter_usage(1, 100, 100, "h100-80gb", 2, 500, 2_900_000, "2026-03", at(9))  # the last batch


def test_stop_twice_is_a_clear_conflict(running_job: Job) -> None:
    running_job.request_stop("first", at(3))
    with refused(running_job, Conflict, "job job_1 is stopping; cannot stop it"):
        running_job.request_stop("second", at(4))


def test_reports_from_a_stale_attempt_are_refused(running_job: Job) -> None:
    running_job.retry(2, "oom", at(3))
    running_job.start(2, at(4))
    with refused(running_job, Conflict, "attempt 1 is not the current attempt"):
        running_job.report_progress(1, 5, None, None, None, 0, at(5))
    with refused(running_job, Conflict, "attempt 1 is not the current attempt"):
        running_job.save_checkpoint(1, 5, "p", at(5))


def test_an_attempt_reports_its_activity_only_while_it_runs(running_job: Job) -> None:
    running_job.report_activity(1, "converting base model tiny-llama (first use)", at(3))
    running_job.report_activity(1, None, at(4))
    assert names(running_job)[-2:] == ["ActivityReported", "ActivityReported"]
    with refused(running_job, ValidationFailed, "activity must be 1-200 characters"):
        running_job.report_activity(1, "x" * 201, at(5))
    with refused(running_job, Conflict, "attempt 2 is not the current attempt"):
        running_job.report_activity(2, "converting", at(5))
    running_job.mark_failed("boom", at(6))
    with refused(running_job, Conflict, "job job_1 is failed; cannot report activity for it"):
        running_job.report_activity(1, "converting", at(7))


def test_progress_never_goes_back_within_an_attempt_but_may_after_a_resume(running_job: Job) -> None:
    running_job.report_progress(1, 50, None, None, None, 0, at(3))
    with refused(running_job, Conflict, "behind step 50"):
        running_job.report_progress(1, 49, None, None, None, 0, at(4))
    running_job.retry(2, "preempted", at(5))
    running_job.start(2, at(6))
    running_job.report_progress(2, 40, None, None, None, 0, at(7))  # resumed from checkpoint 40
    assert running_job.step == 40


def test_usage_is_summed_per_group_and_priced_once(running_job: Job) -> None:
    for seq in range(3):
        running_job.meter_usage(1, seq, seq, "h100-80gb", 2, 1001, 2_900_000, "2026-03", at(3))
    running_job.meter_usage(
        1, 3, 3, "h100-80gb", 2, 1000, 3_000_000, "2026-03", at(4)
    )  # new price: new group
    cost = running_job.cost()
    assert cost.gpu_ms == 4003
    assert [line.gpu_ms for line in cost.lines] == [3003, 1000]
    assert cost.cost_usd_micros == cost_usd_micros(3003, 2, 2_900_000) + cost_usd_micros(1000, 2, 3_000_000)


def test_a_batch_already_metered_is_refused(running_job: Job) -> None:
    running_job.meter_usage(1, 0, 9, "h100-80gb", 2, 10_000, 2_900_000, "2026-03", at(3))
    for first, last in ((0, 9), (9, 12), (5, 20)):
        with refused(running_job, Conflict, "already metered"):
            running_job.meter_usage(1, first, last, "h100-80gb", 2, 10_000, 2_900_000, "2026-03", at(4))
    running_job.meter_usage(1, 10, 12, "h100-80gb", 2, 3_000, 2_900_000, "2026-03", at(4))
    assert running_job.metered_seq == {"1": 12}


@pytest.mark.parametrize(("first", "last", "where"), [(5, 4, "last_seq"), (-1, 4, "first_seq")])
def test_rejected_heartbeats_are_checked_as_a_metered_batch(
    running_job: Job, first: int, last: int, where: str
) -> None:
    """The same seq range rule as ``meter_usage``: counts, the last not before the first."""
    for act in (
        lambda: running_job.meter_usage(1, first, last, "h100-80gb", 2, 1, 1, "2026-03", at(3)),
        lambda: running_job.reject_heartbeats(1, first, last, 1, "lease_superseded", at(3)),
    ):
        with refused(running_job, ValidationFailed) as info:
            act()
        assert info.value.where == where


def test_each_attempt_has_its_own_sequence(running_job: Job) -> None:
    running_job.meter_usage(1, 0, 9, "h100-80gb", 2, 10_000, 2_900_000, "2026-03", at(3))
    with refused(running_job, Conflict, "attempt 2 has not started"):
        running_job.meter_usage(2, 0, 0, "h100-80gb", 2, 1, 2_900_000, "2026-03", at(3))
    running_job.retry(2, "oom", at(4))
    running_job.start(2, at(5))
    running_job.meter_usage(2, 0, 4, "h100-80gb", 2, 5_000, 2_900_000, "2026-03", at(6))
    assert running_job.metered_seq == {"1": 9, "2": 4}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1, 5, 4, "h100-80gb", 2, 1, 1, "2026-03"), ValidationFailed),  # last before first
        ((1, 0, 0, "h100-80gb", 2, -1, 1, "2026-03"), ValidationFailed),
        ((1, 0, 0, "h100-80gb", 2, 1, 1, "March"), ValidationFailed),
        ((0, 0, 0, "h100-80gb", 2, 1, 1, "2026-03"), Conflict),
    ],
)
def test_metering_refuses_malformed_batches(
    running_job: Job, args: tuple[Any, ...], error: type[Exception]
) -> None:
    with refused(running_job, error):
        running_job.meter_usage(*args, at(3))


def test_metering_before_any_start_is_refused(make_job: Callable[..., Job]) -> None:
    job = make_job()
    with refused(job, Conflict, "has not started"):
        job.meter_usage(1, 0, 0, "h100-80gb", 2, 1, 1, "2026-03", at(1))


def test_an_alert_is_raised_once_per_scope_and_threshold(running_job: Job) -> None:
    running_job.raise_alert("job", 50, 2_500_000, 5_000_000, at(3))
    with refused(running_job, Conflict, "already raised"):
        running_job.raise_alert("job", 50, 2_600_000, 5_000_000, at(4))
    running_job.raise_alert("budget", 50, 2_600_000, 5_000_000, at(4))
    assert running_job.alerts == ["job:50", "budget:50"]


def test_naive_times_are_refused_before_anything_changes(running_job: Job) -> None:
    with refused(running_job, ValidationFailed, "timezone"):
        running_job.request_stop("x", at(3).replace(tzinfo=None))


def test_replay_and_snapshot_rebuild_the_same_job(running_job: Job) -> None:
    running_job.meter_usage(1, 0, 3, "h100-80gb", 2, 4000, 2_900_000, "2026-03", at(3))
    running_job.save_checkpoint(1, 3, "ck/3", at(3))
    running_job.request_stop("budget", at(4))

    app = Application(env={"IS_SNAPSHOTTING_ENABLED": "y"})
    app.save(running_job)
    app.take_snapshot(running_job.id)
    assert app.snapshots is not None and len(list(app.snapshots.get(running_job.id))) == 1
    from_snapshot = app.repository.get(running_job.id)
    assert from_snapshot == running_job
    assert from_snapshot.cost() == running_job.cost()
    with pytest.raises(Conflict, match="is stopping"):  # state from a snapshot still obeys the rules
        from_snapshot.queue(at(5))
    replayed = None
    for event in app.events.get(running_job.id):
        replayed = event.mutate(replayed)
    assert replayed == running_job


def test_upcaster_reads_a_v1_submitted_as_one_gpu() -> None:
    app = Application()
    job = submit_job(gpu_count=4)
    v3 = app.mapper.to_stored_event(job.pending_events[0])
    assert b'"class_version":3' in v3.state and b'"gpu_count":4' in v3.state
    v1_state = (
        v3.state.replace(b',"class_version":3', b"")
        .replace(b'"gpu_count":4,', b"")
        .replace(b'"start_from":null,', b"")
    )
    assert b"gpu_count" not in v1_state and b"class_version" not in v1_state
    v1 = StoredEvent(v3.originator_id, v3.originator_version, v3.topic, v1_state)
    event = app.mapper.to_domain_event(v1)
    assert isinstance(event, Job.Submitted) and event.gpu_count == 1 and event.start_from is None
    assert event.mutate(None).gpu_count == 1


def test_upcaster_reads_a_v2_submitted_as_starting_from_the_base_model() -> None:
    app = Application()
    v3 = app.mapper.to_stored_event(submit_job().pending_events[0])
    v2_state = v3.state.replace(b',"class_version":3', b',"class_version":2').replace(
        b'"start_from":null,', b""
    )
    assert b"start_from" not in v2_state
    event = app.mapper.to_domain_event(
        StoredEvent(v3.originator_id, v3.originator_version, v3.topic, v2_state)
    )
    assert isinstance(event, Job.Submitted) and event.start_from is None
    assert event.mutate(None).start_from is None


def test_a_job_records_the_checkpoint_or_model_it_starts_from() -> None:
    point = {"kind": "model", "id": "mdl_9", "path": "users/usr_1/models/mdl_9/weights/"}
    job = submit_job(start_from=point)
    assert job.start_from == point and job.start_from is not point
    assert submit_job().start_from is None


@pytest.mark.parametrize(
    "start_from",
    [
        {"kind": "dataset", "id": "ds_1", "path": "p/"},
        {"kind": "model", "id": "", "path": "p/"},
        {"kind": "model", "id": "mdl_9"},
        {"kind": "model", "id": "mdl_9", "path": "p/", "extra": 1},
        "mdl_9",
    ],
)
def test_a_start_point_must_name_its_kind_id_and_path(start_from: Any) -> None:
    assert refused_field(submit_job, {"start_from": start_from}) == "start_from"


def test_a_v3_snapshot_upcast_starts_from_the_base_model() -> None:
    state: dict[str, Any] = {}
    Job.upcast_v3_v4(state)
    assert state == {"start_from": None}


def job_in(state: JobState) -> Job:
    """A fresh job driven into ``state`` by the shortest path."""
    job = submit_job()
    paths: dict[JobState, list[Callable[[Job], None]]] = {
        S.SUBMITTED: [],
        S.QUEUED: [lambda j: j.queue(at(1))],
        S.RUNNING: [lambda j: j.queue(at(1)), lambda j: j.start(1, at(2))],
    }
    paths[S.STOPPING] = [*paths[S.RUNNING], lambda j: j.request_stop("x", at(3))]
    paths[S.RETRYING] = [*paths[S.RUNNING], lambda j: j.retry(2, "x", at(3))]
    paths[S.LOST] = [*paths[S.RUNNING], lambda j: j.mark_lost(None, at(3))]
    paths[S.SUCCEEDED] = [*paths[S.RUNNING], lambda j: j.mark_succeeded(at(3))]
    paths[S.FAILED] = [*paths[S.RUNNING], lambda j: j.mark_failed("x", at(3))]
    paths[S.STOPPED] = [*paths[S.STOPPING], lambda j: j.mark_stopped(at(4))]
    paths[S.PAUSING] = [*paths[S.RUNNING], lambda j: j.request_pause(at(3))]
    paths[S.PAUSED] = [*paths[S.PAUSING], lambda j: j.mark_paused(at(4))]
    for step in paths[state]:
        step(job)
    assert job.state == state
    return job


SHA = "ab" * 32


def test_usage_metered_records_its_archive_and_the_attempts_total_and_anchor(running_job: Job) -> None:
    running_job.meter_usage(
        1, 1, 3, "h100-80gb", 2, 700, 2_900_000, "2026-03", at(3),
        archive="users/u/heartbeats/job_1/1/1-3.jsonl", archive_sha256=SHA, anchor_at=at(2), anchor_ms=0,
    )  # fmt: skip
    running_job.meter_usage(
        1, 4, 4, "h100-80gb", 2, 300, 2_900_000, "2026-03", at(4), anchor_at=at(9), anchor_ms=5
    )
    (meter,) = running_job.meters().values()
    assert (meter.seq, meter.ms, meter.anchor_at, meter.anchor_ms) == (
        4,
        1000,
        at(2),
        0,
    )  # the first anchor holds
    event = running_job.pending_events[-2]
    assert (event.archive, event.archive_sha256) == ("users/u/heartbeats/job_1/1/1-3.jsonl", SHA)
    bad = ({"archive": "a"}, {"archive": "a", "archive_sha256": "x"}, {"anchor_at": at(5)})
    for fields in bad:
        with pytest.raises(ValidationFailed):
            running_job.meter_usage(1, 5, 5, "h100-80gb", 2, 1, 1, "2026-03", at(5), **fields)


def test_upcaster_reads_a_v1_usage_metered_as_not_archived(running_job: Job) -> None:
    app = Application()
    running_job.meter_usage(1, 1, 3, "h100-80gb", 2, 700, 2_900_000, "2026-03", at(3))
    v2 = app.mapper.to_stored_event(running_job.pending_events[-1])
    assert b'"class_version":2' in v2.state
    v1_state = v2.state
    for field in (b'"archive":null,', b'"archive_sha256":null,', b'"anchor_at":null,', b'"anchor_ms":null,'):
        assert field in v1_state
        v1_state = v1_state.replace(field, b"")
    v1_state = v1_state.replace(b',"class_version":2', b"")
    v1 = StoredEvent(v2.originator_id, v2.originator_version, v2.topic, v1_state)
    event = app.mapper.to_domain_event(v1)
    assert isinstance(event, Job.UsageMetered) and (event.archive, event.anchor_at, event.gpu_ms) == (
        None,
        None,
        700,
    )


def test_a_v2_snapshot_upcast_takes_each_metered_attempt_to_have_metered_the_whole_job() -> None:
    state: dict[str, Any] = {"usage": {"a": 700, "b": 300}, "metered_seq": {"1": 9, "2": 4}}
    Job.upcast_v2_v3(state)
    assert state["metered_ms"] == {"1": 1000, "2": 1000} and state["meter_anchors"] == {}


# ---- pause and resume ----


def test_pause_of_a_running_job_waits_for_its_runner_then_resume_starts_the_next_attempt(
    running_job: Job,
) -> None:
    job = running_job
    job.save_checkpoint(1, 10, "users/usr_1/jobs/job_1/attempts/1/checkpoints/10/", at(3), lease=None)
    job.request_pause(at(4))
    assert job.state == S.PAUSING
    job.report_progress(1, 12, 100, 0.1, 2.5, 1000, at(5))  # the runner still reports while it checkpoints
    job.save_checkpoint(1, 12, "users/usr_1/jobs/job_1/attempts/1/checkpoints/12/", at(5))
    job.mark_paused(at(6))
    assert (job.state, job.step, job.lease, job.placement) == (S.PAUSED, 12, None, None)
    with refused(job, Conflict, "cannot start"):
        job.start(2, at(7))  # a paused job runs nothing until it is resumed
    job.resume(at(8))
    assert (job.state, job.resumed_attempts) == (S.QUEUED, 1)
    with refused(job, Conflict, "next attempt is 2"):
        job.start(1, at(9))
    job.start(2, at(9), lease="l2")
    assert (job.state, job.attempt) == (S.RUNNING, 2)
    assert names(job)[-4:] == ["CheckpointSaved", "Paused", "Resumed", "Started"]
    assert "PauseRequested" in names(job)


def test_a_job_with_nothing_running_is_paused_at_once_and_resumes_from_step_zero(
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    job.queue(at(1))
    job.request_pause(at(2))
    assert (job.state, job.step, names(job)[-1]) == (S.PAUSED, 0, "Paused")
    job.resume(at(3))
    job.start(1, at(4))  # the first attempt: nothing ran before the pause
    assert (job.state, job.attempt, job.resumed_attempts) == (S.RUNNING, 1, 0)


def test_a_job_paused_while_retrying_resumes_with_the_announced_attempt(running_job: Job) -> None:
    running_job.retry(2, "CUDA error", at(3))
    running_job.request_pause(at(4))
    running_job.resume(at(5))
    running_job.start(2, at(6))
    assert (running_job.attempt, running_job.resumed_attempts) == (2, 0)


def test_pausing_may_still_end_succeeded_failed_or_stopping(running_job: Job) -> None:
    running_job.request_pause(at(3))
    running_job.request_stop("changed my mind", at(4))
    assert running_job.state == S.STOPPING
    for end in (lambda j: j.mark_succeeded(at(5)), lambda j: j.mark_failed("boom", at(5))):
        job = job_in(S.PAUSING)
        end(job)
        assert job.state in (S.SUCCEEDED, S.FAILED)


def test_pause_of_an_ended_or_paused_job_is_refused_with_a_clear_message() -> None:
    for state in (S.SUCCEEDED, S.FAILED, S.STOPPED):
        job = job_in(state)
        with refused(job, Conflict, "it has ended, there is nothing to pause"):
            job.request_pause(at(9))
    for state in (S.PAUSING, S.PAUSED):
        job = job_in(state)
        with refused(job, Conflict, f"is {state} already"):
            job.request_pause(at(9))


def test_a_paused_runner_is_fenced_by_its_lease() -> None:
    job = submit_job()
    job.queue(at(1))
    job.start(1, at(2), lease="l1")
    job.request_pause(at(3))
    with refused(job, Conflict, "superseded"):
        job.mark_paused(at(4), lease="other")
    job.mark_paused(at(4), lease="l1")
    with refused(job, Conflict):
        job.mark_stopped(at(5), lease="l1")  # its lease is released with the pause


def test_a_paused_jobs_snapshot_round_trips_and_a_v4_snapshot_upcast_has_no_resumed_attempts() -> None:
    state: dict[str, Any] = {}
    Job.upcast_v4_v5(state)
    assert state == {"resumed_attempts": 0}
    job = job_in(S.PAUSED)
    app = Application(env={"IS_SNAPSHOTTING_ENABLED": "y"})
    app.save(job)
    app.take_snapshot(job.id)
    assert app.repository.get(job.id) == job
