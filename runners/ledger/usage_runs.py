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

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from domain.metering import UsageRun
from domain.money import period_of
from storage.heartbeats import Heartbeat

__all__ = ["Fresh", "by_user_and_job", "fresh_heartbeats", "usage_runs"]


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
