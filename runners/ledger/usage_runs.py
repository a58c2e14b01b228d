"""Pure metering: heartbeats -> deduplicated, priced usage runs, one per usage group per batch.

A heartbeat carries its attempt's cumulative GPU milliseconds (``gpu_ms_total``); the rules of
``domain.cumulative`` give what each adds (the increase of the total over what was metered of
its attempt so far):

- Duplicates (redelivery, a runner republishing after a failed flush) share
  ``(job_id, attempt, seq)``; only the first is kept.
- Within a batch a job's heartbeats are taken in ``(attempt, seq)`` order, so reordering
  inside a batch changes nothing. A heartbeat at or below the attempt's last metered seq
  (``Job.metered_seq``, rebuilt from the events, so it survives a restart) is dropped: a later
  one was metered already and carried a total at least as high, so nothing is lost.
- A gap in ``seq`` (a lost message) loses nothing either: the next heartbeat carries the total.
  The final heartbeat settles the attempt exactly.

Runs: consecutive fresh heartbeats (in ``(attempt, seq)`` order) with the same attempt,
period, GPU type, GPU count and price form one ``UsageRun`` -> one ``UsageMetered`` event
claiming ``first_seq..last_seq`` with the sum of their increases. Each increase is priced at
the price in force at the heartbeat that carried it, in that heartbeat's month. Runs must be
consecutive, not merely equal-keyed: a job refuses a batch that does not start after its
attempt's last metered seq. Normally a job gets one run per batch; a price change or a month
boundary inside the batch splits it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec

from domain.cumulative import AttemptMeter, clamp_time, fresh, meter_attempt
from domain.metering import UsageRun
from domain.money import period_of
from storage.heartbeats import Heartbeat

__all__ = [
    "CLOCK_BOUND",
    "GPU_TOLERANCE",
    "Bounded",
    "ClockBounds",
    "Fresh",
    "Increase",
    "bound_clocks",
    "by_user_and_job",
    "clamp_times",
    "fresh_heartbeats",
    "usage_runs",
]

CLOCK_BOUND = timedelta(minutes=5)
"""Default: how far a heartbeat's ``at`` may be from the ledger's receive time before it is clamped."""
GPU_TOLERANCE = timedelta(seconds=2)
"""Default: GPU time an attempt may claim beyond the wall time the ledger has seen it run."""


class Fresh(NamedTuple):
    """A job's heartbeats to bill (in ``(attempt, seq)`` order) and how many were dropped as repeats."""

    heartbeats: list[Heartbeat]
    dropped: int


def by_user_and_job(heartbeats: Iterable[Heartbeat]) -> dict[str, dict[str, list[Heartbeat]]]:
    """``{user_id: {job_id: [heartbeats in arrival order]}}``, users and jobs in first-arrival order."""
    grouped: dict[str, dict[str, list[Heartbeat]]] = {}
    for heartbeat in heartbeats:
        grouped.setdefault(heartbeat.user_id, {}).setdefault(heartbeat.job_id, []).append(heartbeat)
    return grouped


def fresh_heartbeats(heartbeats: Iterable[Heartbeat], metered_seq: Mapping[str, int]) -> Fresh:
    """One job's heartbeats not billed yet, sorted by ``(attempt, seq)``.

    ``metered_seq`` maps ``str(attempt)`` to its last metered seq (``Job.metered_seq``).
    """
    kept, dropped = fresh(heartbeats, {int(a): seq for a, seq in metered_seq.items()})
    return Fresh(kept, dropped)


class Increase(NamedTuple):
    """A fresh heartbeat (its time clamped), its price, and the GPU ms per GPU it adds to its attempt."""

    heartbeat: Heartbeat
    price: int
    gpu_ms: int


def usage_runs(
    increases: Sequence[Increase],
    meters: Mapping[int, AttemptMeter],
) -> list[UsageRun]:
    """Maximal runs of consecutive increases sharing one usage group.

    ``increases`` is one job's fresh heartbeats in ``(attempt, seq)`` order, each with the price
    in force at its ``at`` and what it adds (``bound_clocks``); ``meters`` gives each attempt's
    clock anchor. (The ledger names the archive on the runs once every job's are known:
    ``LedgerWorker``'s ``archive_runs``.)
    """
    runs: list[UsageRun] = []
    current: tuple[int, str, str, int, int] | None = None
    members: list[Increase] = []
    for increase in increases:
        heartbeat = increase.heartbeat
        key = (
            heartbeat.attempt,
            period_of(heartbeat.at),
            heartbeat.gpu_type,
            heartbeat.gpu_count,
            increase.price,
        )
        if key != current and members:
            runs.append(_run(members, current, meters))  # type: ignore[arg-type]
            members = []
        current = key
        members.append(increase)
    if members:
        runs.append(_run(members, current, meters))  # type: ignore[arg-type]
    return runs


def _run(
    members: list[Increase],
    key: tuple[int, str, str, int, int],
    meters: Mapping[int, AttemptMeter],
) -> UsageRun:
    attempt, period, gpu_type, gpu_count, price = key
    meter = meters.get(attempt)
    anchored = meter is not None and meter.anchor_at is not None
    return UsageRun(
        job_id=members[0].heartbeat.job_id,
        attempt=attempt,
        first_seq=members[0].heartbeat.seq,
        last_seq=members[-1].heartbeat.seq,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_ms=sum(m.gpu_ms for m in members),
        usd_micros_per_hour=price,
        period=period,
        last_at=max(m.heartbeat.at for m in members),
        heartbeats=len(members),
        anchor_at=meter.anchor_at if anchored else None,  # type: ignore[union-attr]
        anchor_ms=meter.anchor_ms if anchored else None,  # type: ignore[union-attr]
    )


# ---- bounded clocks ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClockBounds:
    """The ledger's bounds on a runner's clocks (``LedgerWorker(clock_bound=, gpu_tolerance=)``)."""

    clock_bound: timedelta = CLOCK_BOUND
    gpu_tolerance: timedelta = GPU_TOLERANCE


def clamp_times(
    heartbeats: Sequence[Heartbeat], received: datetime, bound: timedelta
) -> tuple[list[Heartbeat], int]:
    """Rule 1 of ``domain.cumulative``: each heartbeat dated more than ``bound`` from ``received``
    (the ledger's clock when the batch arrived) taken at ``received``; and how many were."""
    kept: list[Heartbeat] = []
    clamped = 0
    for heartbeat in heartbeats:
        at = clamp_time(heartbeat.at, received, bound)
        if at != heartbeat.at:
            heartbeat = msgspec.structs.replace(heartbeat, at=at)
            clamped += 1
        kept.append(heartbeat)
    return kept, clamped


class Bounded(NamedTuple):
    """What one job's fresh, priced heartbeats add, and how many claimed more GPU time than the
    wall time seen (cut: the part cut off is metered later, when wall time catches up)."""

    increases: list[Increase]
    gpu_clamped: int


def bound_clocks(
    priced: Sequence[tuple[Heartbeat, int]],
    gpu_count: int,
    meters: MutableMapping[int, AttemptMeter],
    bounds: ClockBounds = ClockBounds(),
) -> Bounded:
    """Rules 3 and 4 of ``domain.cumulative`` on one job's fresh, priced heartbeats (``(attempt, seq)``
    order, times clamped): each attempt's cumulative total, bounded by the wall time since its
    anchor x ``gpu_count`` (the GPUs the job may use), metered as its increase.

    ``meters`` (attempt -> ``AttemptMeter``, from ``Job.meters``) is updated as if every
    increase is metered; an attempt missing from it starts with nothing metered.
    """
    increases: list[Increase] = []
    cut = 0
    by_attempt: dict[int, list[tuple[Heartbeat, int]]] = {}
    for heartbeat, price in priced:
        by_attempt.setdefault(heartbeat.attempt, []).append((heartbeat, price))
    for attempt, pairs in by_attempt.items():
        meter = meters.setdefault(attempt, AttemptMeter())
        prices = {h.seq: p for h, p in pairs}
        for heartbeat, added, was_cut in meter_attempt(
            [h for h, _ in pairs], meter, gpu_count, bounds.gpu_tolerance
        ):
            increases.append(Increase(heartbeat, prices[heartbeat.seq], added))  # type: ignore[arg-type]
            cut += was_cut
    return Bounded(increases, cut)
