"""Pure metering: heartbeats -> deduplicated, priced usage runs, one per usage group per batch.

A heartbeat carries the GPU milliseconds since the previous heartbeat of its attempt, so
each one is billed on its own:

- Duplicates (redelivery, a runner republishing after a failed flush) share
  ``(job_id, attempt, seq)``; only the first is kept.
- Within a batch a job's heartbeats are taken in ``(attempt, seq)`` order, so reordering
  inside a batch changes nothing. A heartbeat at or below the attempt's last metered seq
  (``Job.metered_seq``, rebuilt from the events, so it survives a restart) is dropped.
- A gap in ``seq`` (a lost message) is fine: every heartbeat carries its own milliseconds.
  A heartbeat that never arrives, or arrives after a later one of its attempt was metered,
  is unbilled time: the error is always in the customer's favour.

Runs: consecutive fresh heartbeats (in ``(attempt, seq)`` order) with the same attempt,
period, GPU type, GPU count and price form one ``UsageRun`` -> one ``UsageMetered`` event
claiming ``first_seq..last_seq``. Runs must be consecutive, not merely equal-keyed: a job
refuses a batch that does not start after its attempt's last metered seq. Normally a job
gets one run per batch; a price change or a month boundary inside the batch splits it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec

from domain.metering import UsageRun
from domain.money import period_of
from storage.heartbeats import Heartbeat

__all__ = [
    "CLOCK_BOUND",
    "GPU_TOLERANCE",
    "AttemptClock",
    "Bounded",
    "ClockBounds",
    "Fresh",
    "bound_clocks",
    "by_user_and_job",
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
    unique: dict[tuple[int, int], Heartbeat] = {}
    total = 0
    for heartbeat in heartbeats:
        total += 1
        last = metered_seq.get(str(heartbeat.attempt))
        if last is not None and heartbeat.seq <= last:
            continue
        unique.setdefault((heartbeat.attempt, heartbeat.seq), heartbeat)
    kept = [unique[key] for key in sorted(unique)]
    return Fresh(kept, total - len(kept))


def usage_runs(priced: Sequence[tuple[Heartbeat, int]]) -> list[UsageRun]:
    """Maximal runs of consecutive ``(heartbeat, usd_micros_per_hour)`` pairs sharing one usage group.

    ``priced`` is one job's fresh heartbeats in ``(attempt, seq)`` order, each with the price
    in force at its ``at``.
    """
    runs: list[UsageRun] = []
    current: tuple[int, str, str, int, int] | None = None
    members: list[Heartbeat] = []
    for heartbeat, price in priced:
        key = (heartbeat.attempt, period_of(heartbeat.at), heartbeat.gpu_type, heartbeat.gpu_count, price)
        if key != current and members:
            runs.append(_run(members, current))  # type: ignore[arg-type]
            members = []
        current = key
        members.append(heartbeat)
    if members:
        runs.append(_run(members, current))  # type: ignore[arg-type]
    return runs


def _run(members: list[Heartbeat], key: tuple[int, str, str, int, int]) -> UsageRun:
    attempt, period, gpu_type, gpu_count, price = key
    return UsageRun(
        job_id=members[0].job_id,
        attempt=attempt,
        first_seq=members[0].seq,
        last_seq=members[-1].seq,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_ms=sum(h.gpu_ms for h in members),
        usd_micros_per_hour=price,
        period=period,
        last_at=max(h.at for h in members),
        heartbeats=len(members),
    )


# ---- bounded clocks ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClockBounds:
    """The ledger's bounds on a runner's clocks (``LedgerWorker(clock_bound=, gpu_tolerance=)``)."""

    clock_bound: timedelta = CLOCK_BOUND
    gpu_tolerance: timedelta = GPU_TOLERANCE


@dataclass
class AttemptClock:
    """What the ledger has metered of one attempt: the (clamped) time of the first heartbeat it
    metered, and the GPU milliseconds (x the heartbeat's GPU count) metered since."""

    anchor: datetime
    claimed_ms: int = 0


class Bounded(NamedTuple):
    """One job's fresh heartbeats after the clock rules, and how many each rule changed."""

    heartbeats: list[Heartbeat]
    clock_clamped: int
    gpu_clamped: int


def bound_clocks(
    heartbeats: Sequence[Heartbeat],
    received: datetime,
    gpu_count: int,
    attempts: MutableMapping[int, AttemptClock],
    bounds: ClockBounds = ClockBounds(),
) -> Bounded:
    """Apply the clock rules to one job's fresh heartbeats (``(attempt, seq)`` order).

    1. Time: a heartbeat whose ``at`` is more than ``clock_bound`` from ``received`` (the
       ledger's clock when the batch arrived) gets ``at = received``: it is priced and placed in
       the month of its receive time, so a runner's clock cannot move usage into another month.
    2. GPU time: from the first heartbeat the ledger meters of an attempt (its anchor), the
       attempt's metered GPU time (``gpu_ms x gpu_count`` of each heartbeat) is at most
       ``(at - anchor + gpu_tolerance) x gpu_count`` (the job's submitted count), ``at`` the
       clamped time; a heartbeat claiming more is cut to what is left (never below 0). The
       anchor's own milliseconds (spent before the ledger saw the attempt: normally 0, the start
       heartbeat) are not bounded by this rule.

    ``attempts`` (attempt -> ``AttemptClock``) is the caller's state per attempt of the job; it
    is updated as if every returned heartbeat is metered.
    """
    bound = bounds.clock_bound
    tolerance_ms = _ms(bounds.gpu_tolerance)
    kept: list[Heartbeat] = []
    clock_clamped = gpu_clamped = 0
    for heartbeat in heartbeats:
        at = heartbeat.at
        if not received - bound <= at <= received + bound:
            at = received
            clock_clamped += 1
        gpu_ms = heartbeat.gpu_ms
        state = attempts.get(heartbeat.attempt)
        if state is None:
            attempts[heartbeat.attempt] = AttemptClock(at)
        else:
            allowed = (max(0, _ms(at - state.anchor)) + tolerance_ms) * gpu_count - state.claimed_ms
            most = max(0, allowed) // heartbeat.gpu_count
            if gpu_ms > most:
                gpu_ms = most
                gpu_clamped += 1
            state.claimed_ms += gpu_ms * heartbeat.gpu_count
        if at != heartbeat.at or gpu_ms != heartbeat.gpu_ms:
            heartbeat = msgspec.structs.replace(heartbeat, at=at, gpu_ms=gpu_ms)
        kept.append(heartbeat)
    return Bounded(kept, clock_clamped, gpu_clamped)


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)
