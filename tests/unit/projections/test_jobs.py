"""The job fold: status.json per job and the jobs.json listing."""

from __future__ import annotations

from functools import reduce
from typing import Any

from domain.job import Job
from projections import jobs
from projections.render import decode, encode
from tests.unit.projections.builders import T0, Clock, events_of


def _job(clock: Clock, job_id: str = "j1", **kw: Any) -> Job:
    fields = {
        "job_id": job_id,
        "user_id": "u1",
        "base_model": "llama3-8b",
        "dataset_id": "ds1",
        "model_id": "m1",
        "config": {},
        "gpu_type": "a100-80gb",
        "gpu_count": 2,
        "max_cost_usd_micros": 20_000_000,
        "estimate_usd_micros": 3_000_000,
    } | kw
    return Job.submit(at=clock(), **fields)


def _fold(events: list[Any]) -> jobs.JobState:
    return reduce(jobs.fold, events, None)  # type: ignore[arg-type]


def test_status_json_follows_a_job_through_retry_to_success() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    job.report_progress(1, 10, 100, 0.1, 2.5, 4096, at=clock())
    job.save_checkpoint(1, 10, "users/u1/jobs/j1/checkpoints/10/", at=clock())
    job.meter_usage(1, 0, 5, "a100-80gb", 2, 1_800_000, 2_000_000, "2024-03", at=clock())
    job.retry(2, "preempted", at=clock())
    job.start(2, at=clock())
    job.report_progress(2, 100, 100, 1.0, 0.75, 40960, at=clock())
    job.meter_usage(2, 0, 3, "a100-80gb", 2, 1_800_000, 2_000_000, "2024-03", at=clock())
    job.mark_succeeded(at=clock(), metrics={"eval_loss": 0.8})

    state = _fold(events_of(job))
    status = decode(encode(jobs.item_view(state, 42)))

    assert status["position"] == 42
    assert status["status"] == "succeeded" and status["attempt"] == 2
    progress = (status["step"], status["total_steps"], status["loss"], status["tokens"])
    assert progress == (100, 100, 0.75, 40960)
    assert status["checkpoints"] == [
        {"attempt": 1, "step": 10, "path": "users/u1/jobs/j1/checkpoints/10/", "at": "2024-03-01T09:05:00Z"}
    ]
    assert status["gpu_metrics"] == {
        "gpu_type": "a100-80gb",
        "gpu_count": 2,
        "current_duration_seconds": 3600,
        "gpu_ms": 3_600_000,
    }
    # one hour on two GPUs at $2/h; and the domain's own cost agrees
    assert status["cost_usd_micros"] == 4_000_000 == job.cost().cost_usd_micros
    assert status["retries"] == [{"attempt": 2, "reason": "preempted", "at": "2024-03-01T09:07:00Z"}]
    assert status["metrics"] == {"eval_loss": 0.8}
    assert status["created_at"] == "2024-03-01T09:01:00Z"
    assert status["finished_at"] == status["updated_at"] == "2024-03-01T09:11:00Z"
    assert status["error"] is None and status["stop_reason"] is None


def test_usage_is_priced_per_group_from_summed_milliseconds_never_per_heartbeat() -> None:
    clock = Clock()
    job = _job(clock, gpu_count=1)
    job.queue(at=clock())
    job.start(1, at=clock())
    for seq in range(3):  # each batch alone would cost 0.5 micro -> rounds up to 1; summed: 1.5 -> 2
        job.meter_usage(1, seq, seq, "a100-80gb", 1, 1, 1_800_000, "2024-03", at=clock())
    state = _fold(events_of(job))
    assert jobs.item_view(state, 1).cost_usd_micros == 2


def test_stop_request_then_stopped_records_reason_and_step() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    job.request_stop("budget reached", at=clock())
    mid = _fold(events_of(job))
    assert mid.status == "stopping" and mid.stop_reason == "budget reached"
    job.mark_stopped(at=clock(), step=7)
    state = reduce(jobs.fold, events_of(job), mid)
    assert (state.status, state.step, state.stop_reason) == ("stopped", 7, "budget reached")
    assert state.finished_at is not None


def test_failure_and_alerts_show_in_status() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    job.raise_alert("job", 80, 16_000_000, 20_000_000, at=clock())
    job.mark_failed("CUDA out of memory", at=clock())
    view = decode(encode(jobs.item_view(_fold(events_of(job)), 9)))
    assert view["status"] == "failed" and view["error"] == "CUDA out of memory"
    assert view["alerts"] == [
        {
            "scope": "job",
            "threshold_pct": 80,
            "spent": 16.0,
            "spent_usd_micros": 16_000_000,
            "limit": 20.0,
            "limit_usd_micros": 20_000_000,
            "at": "2024-03-01T09:04:00Z",
        }
    ]


def test_listing_row_has_the_seed_fields_and_changes_only_on_transitions() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    running = _fold(events_of(job))
    job.report_progress(1, 5, 10, None, 1.0, 10, at=clock())
    job.meter_usage(1, 0, 0, "a100-80gb", 2, 1000, 2_000_000, "2024-03", at=clock())
    busy = reduce(jobs.fold, events_of(job), running)
    assert jobs.row(busy) == jobs.row(running)
    assert list(msgspec_fields(jobs.row(busy)))[:6] == [
        "job_id",
        "model_id",
        "dataset_id",
        "status",
        "created_at",
        "updated_at",
    ]
    assert jobs.row(running).updated_at == "2024-03-01T09:03:00Z"


def msgspec_fields(struct: Any) -> tuple[str, ...]:
    return type(struct).__struct_fields__


def test_listing_is_ordered_by_creation_time_then_id_whatever_the_insertion_order() -> None:
    clock = Clock()
    a, b, c = (_fold(events_of(_job(clock, job_id))) for job_id in ("jb", "ja", "jc"))
    same_time = _fold(events_of(Job.submit(**{**_submit_fields(), "job_id": "j0"}, at=a.created_at)))
    listing = jobs.listing_view([c, same_time, b, a], 5)
    assert [r.job_id for r in listing.jobs] == ["j0", "jb", "ja", "jc"]
    assert decode(encode(listing))["position"] == 5


def _submit_fields() -> dict[str, Any]:
    return {
        "user_id": "u1",
        "base_model": "b",
        "dataset_id": "d",
        "model_id": "m",
        "config": {},
        "gpu_type": "t4",
        "gpu_count": 1,
        "max_cost_usd_micros": None,
        "estimate_usd_micros": None,
    }


def test_fold_is_pure() -> None:
    clock = Clock(T0)
    job = _job(clock)
    job.queue(at=clock())
    submitted, queued = events_of(job)
    before = jobs.fold(None, submitted)
    snapshot = encode(jobs.item_view(before, 1))
    after = jobs.fold(before, queued)
    assert after.status == "queued" and before.status == "submitted"
    assert encode(jobs.item_view(before, 1)) == snapshot


def test_the_status_tells_the_activity_of_an_attempt_until_training_or_the_state_moves_on() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    history = events_of(job)

    def folded() -> jobs.JobState:
        history.extend(events_of(job))
        return _fold(history)

    before = encode(jobs.item_view(folded(), 1))
    assert b"activity" not in before  # no activity, no key: the views of older histories are unchanged
    job.report_activity(1, "converting base model llama3-8b (first use), this takes a minute", at=clock())
    status = decode(encode(jobs.item_view(folded(), 2)))
    assert status["activity"] == "converting base model llama3-8b (first use), this takes a minute"
    job.report_activity(1, None, at=clock())
    assert folded().activity is None

    job.report_activity(1, "converting again", at=clock())
    assert folded().activity == "converting again"
    job.report_progress(1, 1, 10, 0.1, 2.5, 64, at=clock())  # the first step says it all
    assert folded().activity is None
    job.report_activity(1, "converting again", at=clock())
    job.retry(2, "the runner died", at=clock())  # so does a change of state
    state = folded()
    assert state.activity is None and b"activity" not in encode(jobs.item_view(state, 3))


def test_status_and_listing_show_pausing_paused_and_the_resumed_job_queued() -> None:
    clock = Clock()
    job = _job(clock)
    job.queue(at=clock())
    job.start(1, at=clock())
    job.save_checkpoint(1, 10, "users/u1/jobs/j1/attempts/1/checkpoints/10/", at=clock())
    job.report_progress(1, 12, 100, 0.1, 2.5, 4096, at=clock())
    job.request_pause(at=clock())
    pausing = _fold(events_of(job))
    assert (pausing.status, jobs.row(pausing).status) == ("pausing", "pausing")
    job.mark_paused(at=clock())
    paused = reduce(jobs.fold, events_of(job), pausing)
    status = decode(encode(jobs.item_view(paused, 1)))
    assert (status["status"], status["step"], status["finished_at"]) == ("paused", 10, None)
    assert jobs.row(paused).status == "paused"
    job.resume(at=clock())
    queued = reduce(jobs.fold, events_of(job), paused)
    assert queued.status == "queued"
    job.start(2, at=clock())
    resumed = reduce(jobs.fold, events_of(job), queued)
    assert (resumed.status, resumed.attempt) == ("running", 2)
