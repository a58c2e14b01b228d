"""Metering in tests: one run of usage through ``UserApp.meter_usage``, the ledger's own command."""

from __future__ import annotations

import inspect
from typing import Any

from domain.errors import Conflict, NotFound
from domain.job import Job
from domain.metering import FixedUsage, LimitOrders, MeteringResult, UsageRun

_RUN_OF_ONE_JOB = inspect.signature(Job.meter_usage)


def meter(app: Any, job_id: str, *usage: Any, orders: LimitOrders | None = None) -> MeteringResult:
    """Bill heartbeats ``first_seq..last_seq`` of the job (then ``orders``) in one commit.

    ``usage`` is what ``Job.meter_usage`` takes, in its order: ``attempt, first_seq, last_seq,
    gpu_type, gpu_count, gpu_ms, usd_micros_per_hour, period, at``. Raises what the job refuses
    (already metered, an attempt that never started), as the single-run command before
    ``meter_usage`` did; nothing is saved then.
    """
    run = _RUN_OF_ONE_JOB.bind(None, *usage).arguments
    del run["self"]
    at = run.pop("at")
    heartbeats = run["last_seq"] - run["first_seq"] + 1
    plan = FixedUsage([UsageRun(job_id=job_id, **run, last_at=at, heartbeats=heartbeats)], orders)
    result: MeteringResult = app.meter_usage(plan.job_ids, plan, at)
    if result.unknown_job_ids:
        raise NotFound(f"no job {job_id}", where="job_id")
    if result.refused:
        raise Conflict(result.refused[0].reason)
    return result
