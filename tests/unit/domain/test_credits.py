"""Credits: platform faults credit an attempt's GPU time past its checkpoint; ``max_cost`` and the
monthly budget are hard caps (``limit`` credits); money stays exact per group (``domain.money``)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.applications import UserApp
from domain.errors import ValidationFailed
from domain.job import Job
from domain.metering import FixedUsage, UsageRun
from domain.money import cost_usd_micros, group_costs, max_ms_within
from tests.unit.domain.conftest import at, submit_job

PRICE = 2_100_000  # an a100-80gb hour
A100 = "a100-80gb"


def started(**overrides: Any) -> Job:
    job = submit_job(gpu_type=A100, gpu_count=1, **overrides)
    job.queue(at(1))
    job.start(1, at(2))
    return job


def meter(job: Job, attempt: int, seq: int, gpu_ms: int, *, price: int = PRICE, period: str = "2026-03",
          room: int | None = None) -> None:  # fmt: skip
    job.meter_usage(attempt, seq, seq, A100, 1, gpu_ms, price, period, at(3 + seq), period_room=room)


def credits(job: Job) -> list[tuple[int, int, str]]:
    return [(e.attempt, e.gpu_ms, e.reason) for e in job.pending_events if isinstance(e, Job.UsageCredited)]


@pytest.mark.parametrize("count,price", [(1, 2_100_000), (16, 1), (3, 7), (1, 3_600_000), (2, 999_999)])
def test_max_ms_within_is_the_largest_ms_whose_cost_fits(count: int, price: int) -> None:
    for limit in [0, 1, 2, 3, 17, 1000, 123_457]:
        ms = max_ms_within(limit, count, price)
        assert ms is not None
        assert cost_usd_micros(ms, count, price) <= limit < cost_usd_micros(ms + 1, count, price)
    assert max_ms_within(5, 1, 0) is None  # free: any


def test_group_costs_split_charged_into_credited_and_net_exactly() -> None:
    charged, credited, net = group_costs(10_001, 4_000, 3, PRICE)
    assert charged == cost_usd_micros(10_001, 3, PRICE) and net == cost_usd_micros(6_001, 3, PRICE)
    assert charged == credited + net
    with pytest.raises(ValidationFailed):
        group_costs(10, 11, 1, PRICE)


def test_a_lost_attempt_without_a_checkpoint_is_credited_all_its_usage_latest_group_first() -> None:
    job = started()
    meter(job, 1, 0, 30_000, price=PRICE)
    meter(job, 1, 1, 20_000, price=PRICE + 1)  # a price change: a second group
    job.mark_lost(None, at(9))
    assert credits(job) == [(1, 20_000, "lost"), (1, 30_000, "lost")]
    cost = job.cost()
    assert (cost.gpu_ms, cost.credited_gpu_ms, cost.cost_usd_micros) == (50_000, 50_000, 0)
    charged = cost_usd_micros(30_000, 1, PRICE) + cost_usd_micros(20_000, 1, PRICE + 1)
    assert cost.charged_usd_micros == cost.credited_usd_micros == charged


def test_a_faulted_attempt_is_credited_its_time_past_its_own_checkpoint_and_its_late_usage() -> None:
    job = started()
    meter(job, 1, 0, 30_000)
    job.save_checkpoint(1, 5, "ckpt/5", at(4), gpu_ms_total=12_345)
    meter(job, 1, 1, 20_000)
    job.retry(2, "the platform shut down", at(5), fault="shutdown")
    assert credits(job) == [(1, 50_000 - 12_345, "shutdown")]
    meter(job, 1, 2, 1_000)  # a late heartbeat of attempt 1: credited with it
    assert credits(job)[-1] == (1, 1_000, "shutdown")
    job.start(2, at(6))
    meter(job, 2, 0, 7_000)  # attempt 2's own usage is charged
    cost = job.cost()
    assert (cost.gpu_ms, cost.credited_gpu_ms) == (58_000, 50_000 + 1_000 - 12_345)
    assert cost.cost_usd_micros == cost_usd_micros(12_345 + 7_000, 1, PRICE)


def test_a_checkpoint_of_an_earlier_attempt_does_not_count_and_a_v1_checkpoint_credits_nothing() -> None:
    job = started(config={"max_retries": 3})
    meter(job, 1, 0, 30_000)
    job.save_checkpoint(1, 5, "ckpt/5", at(4), gpu_ms_total=10_000)
    job.mark_lost(None, at(5))
    job.retry(2, "lost", at(5))
    job.start(2, at(6))
    meter(job, 2, 0, 4_000)
    job.mark_failed("the control plane went away", at(7), fault="control_plane")
    assert credits(job) == [(1, 20_000, "lost"), (2, 4_000, "control_plane")]

    old = started()
    meter(old, 1, 0, 30_000)
    old.save_checkpoint(1, 5, "ckpt/5", at(4))  # no gpu_ms_total: unknown, as before
    old.mark_lost(None, at(5))
    meter(old, 1, 1, 5_000)
    assert credits(old) == [] and old.cost().cost_usd_micros == cost_usd_micros(35_000, 1, PRICE)


def test_a_user_failure_is_charged_and_a_fault_is_credited_once() -> None:
    job = started()
    meter(job, 1, 0, 30_000)
    job.retry(2, "the dataset has a bad line", at(5))
    assert credits(job) == []
    job2 = started()
    with pytest.raises(ValidationFailed):
        job2.retry(2, "x", at(5), fault="cosmic rays")
    meter(job2, 1, 0, 30_000)
    job2.credit_platform_fault(1, "preempted", at(4))
    job2.credit_platform_fault(1, "superseded", at(4))  # once per attempt
    assert credits(job2) == [(1, 30_000, "preempted")]


def test_max_cost_caps_the_net_at_the_most_milliseconds_that_fit() -> None:
    limit = 25_000
    job = started(max_cost_usd_micros=limit)
    meter(job, 1, 0, 40_000)  # 23,333
    meter(job, 1, 1, 10_000)  # would be 29,167
    fits = max_ms_within(limit, 1, PRICE)
    assert credits(job) == [(1, 50_000 - fits, "limit")]  # type: ignore[operator]
    assert job.cost().cost_usd_micros <= limit < cost_usd_micros(fits + 1, 1, PRICE)  # type: ignore[operator]
    meter(job, 1, 2, 10_000)  # past the cap: all of it
    assert credits(job)[-1] == (1, 10_000, "limit")
    assert job.cost().gpu_ms == 60_000 and job.cost().cost_usd_micros <= limit


def test_a_limit_credit_and_a_fault_credit_never_credit_a_millisecond_twice() -> None:
    job = started(max_cost_usd_micros=10_000)
    meter(job, 1, 0, 40_000)
    limited = job.cost().credited_gpu_ms
    job.mark_lost(None, at(9))  # no checkpoint: the rest of the attempt
    assert job.cost().credited_gpu_ms == 40_000 and job.cost().cost_usd_micros == 0
    assert credits(job)[-1] == (1, 40_000 - limited, "lost")


def test_the_period_room_caps_the_jobs_net_in_that_period_only() -> None:
    job = started()
    meter(job, 1, 0, 40_000, period="2026-02")  # another month: not capped by March's room
    meter(job, 1, 1, 40_000, period="2026-03", room=5_000)
    (march,) = [line for line in job.cost().lines if line.period == "2026-03"]
    kept = march.gpu_ms - march.credited_gpu_ms
    assert march.cost_usd_micros <= 5_000 < cost_usd_micros(kept + 1, 1, PRICE)
    meter(job, 1, 2, 1_000, period="2026-03", room=-10)  # others passed the budget already: all of it
    assert credits(job)[-1] == (1, 1_000, "limit")


def run(job_id: str, seq: int, gpu_ms: int) -> UsageRun:
    return UsageRun(job_id=job_id, attempt=1, first_seq=seq, last_seq=seq, gpu_type="cpu", gpu_count=1,
                    gpu_ms=gpu_ms, usd_micros_per_hour=3_600_000, period="2026-03", last_at=at(6),
                    heartbeats=1)  # fmt: skip


def test_the_monthly_budget_caps_the_users_net_spend_across_jobs_in_one_commit() -> None:
    app = UserApp("usr_1")
    app.upload_dataset("ds_1", "train.jsonl", 100, "cd" * 32, at())
    app.validate_dataset("ds_1", "chat", 10, {"tokens": 500}, at(1))
    for job_id in ("job_1", "job_2"):
        app.submit_job(base_model="tiny-llama", dataset_id="ds_1", config={}, gpu_type="cpu", gpu_count=1,
                       at=at(2), job_id=job_id, model_id=f"mdl_{job_id}")  # fmt: skip
        app.queue_job(job_id, at(3))
        app.start_job(job_id, 1, at(4))
    app.set_budget(10_000, at(5))  # $0.01; a cpu "hour" here costs $3.60: 1 ms = 1 µ$
    spent_elsewhere = {"2026-03": 2_000}  # jobs not in this batch
    app.meter_usage(["job_1", "job_2"], FixedUsage([run("job_1", 0, 5_000), run("job_2", 0, 5_000)],
                    spend=spent_elsewhere), at(6))  # fmt: skip
    one, two = app.get_job("job_1"), app.get_job("job_2")
    assert (one.cost_usd_micros, one.credited_gpu_ms) == (5_000, 0)
    assert (two.cost_usd_micros, two.credited_gpu_ms) == (3_000, 2_000)  # 2,000 + 5,000 + 3,000 = the budget
    others = {"2026-03": 2_000 + 3_000}  # job_2 is not in this batch
    app.meter_usage(["job_1"], FixedUsage([run("job_1", 1, 100)], spend=others), at(7))
    assert app.get_job("job_1").credited_gpu_ms == 100


def test_a_v2_snapshot_is_upcast_with_no_credits() -> None:
    state: dict[str, Any] = {"usage": {"k": 1}, "metered_seq": {"1": 4}}
    Job.upcast_v2_v3(state)
    empty: dict[str, Any] = {"credited": {}, "attempt_usage": {}, "attempt_credited": {}, "faults": {}}
    metering = {"metered_ms": {"1": 1}, "meter_anchors": {}}  # the whole job's time: an upper bound
    assert state == {"usage": {"k": 1}, "metered_seq": {"1": 4}, **empty, **metering}
