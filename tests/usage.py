"""Metering in tests: one run of usage through ``UserApp.meter_usage``, the ledger's own command."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.metering import FixedUsage, LimitOrders, MeteringResult, UsageRun


def meter(
    app: Any,
    job_id: str,
    attempt: int,
    first_seq: int,
    last_seq: int,
    gpu_type: str,
    gpu_count: int,
    gpu_ms: int,
    usd_micros_per_hour: int,
    period: str,
    at: datetime,
    *,
    orders: LimitOrders | None = None,
) -> MeteringResult:
    """Bill heartbeats ``first_seq..last_seq`` of the job (then ``orders``) in one commit.

    Raises what the job refuses (already metered, an attempt that never started), as the
    single-run command before ``meter_usage`` did; nothing is saved then.
    """
    run = UsageRun(
        job_id=job_id,
        attempt=attempt,
        first_seq=first_seq,
        last_seq=last_seq,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_ms=gpu_ms,
        usd_micros_per_hour=usd_micros_per_hour,
        period=period,
        last_at=at,
        heartbeats=last_seq - first_seq + 1,
    )
    plan = FixedUsage([run], orders)
    result: MeteringResult = app.meter_usage(plan.job_ids, plan, at)
    if result.unknown_job_ids:
        from domain.errors import NotFound

        raise NotFound(f"no job {job_id}", where="job_id")
    if result.refused:
        from domain.errors import Conflict

        raise Conflict(result.refused[0].reason)
    return result
