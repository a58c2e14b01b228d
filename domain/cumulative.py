"""Cumulative metering: what an attempt's heartbeats add to its bill (the ledger's rule, and the audit's).

A heartbeat carries its attempt's cumulative GPU milliseconds per GPU (``gpu_ms_total``). What
has been metered of an attempt is an ``AttemptMeter``: its last metered seq, its metered total
(the sum of its ``Job.UsageMetered`` ``gpu_ms``) and its clock anchor. For one job's heartbeats
of a batch (``meter_heartbeats``):

1. Time (``clamp_time``): a heartbeat dated more than the clock bound from the ledger's receive
   time is taken at the receive time (its month and its price are those of the receive time).
2. Repeats and late ones (``fresh``): a heartbeat at or below its attempt's metered seq, or
   repeating a ``(attempt, seq)`` seen before, is dropped; the rest are taken in
   ``(attempt, seq)`` order. A late or lost heartbeat loses nothing: a later one carries the total.
3. Increase: each heartbeat adds ``max(0, counted - metered)``, ``counted`` its total within
   the clock bound (4), ``metered`` the attempt's metered total so far; so the metered total
   only grows, and after the final heartbeat it is exactly the attempt's GPU time.
4. GPU time against wall time: the first heartbeat metered of an attempt is its anchor
   (clamped time ``anchor_at`` and total ``anchor_ms``, recorded in the metering event, so it
   survives a restart and the audit reads it back). Later heartbeats count at most
   ``anchor_ms + (at - anchor_at + tolerance) x bound_count // gpu_count`` (``bound_count``:
   the GPUs the job may use); a part cut off is metered later, when wall time catches up.

The increase is priced by the caller at the price in force at the heartbeat that carried it,
in that heartbeat's month (``runners.ledger.usage_runs``): a price change or a month boundary
falls between two heartbeats, and each heartbeat's increase is what the attempt used since the
previous metered one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar

__all__ = [
    "AttemptMeter",
    "Beat",
    "Increase",
    "clamp_time",
    "fresh",
    "meter_attempt",
]


class Beat(Protocol):
    """What the rules read of a heartbeat (``storage.heartbeats.Heartbeat`` has it)."""

    @property
    def attempt(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def gpu_ms_total(self) -> int: ...
    @property
    def gpu_count(self) -> int: ...


B = TypeVar("B", bound=Beat)


@dataclass
class AttemptMeter:
    """What has been metered of one attempt (``Job.meters``): last seq, total, clock anchor."""

    seq: int | None = None
    """The last metered seq (None: nothing metered yet)."""
    ms: int = 0
    """The metered total, GPU ms per GPU: the highest cumulative total metered so far."""
    anchor_at: datetime | None = None
    """The (clamped) time of the first heartbeat metered of the attempt (None: none yet, or only
    usage metered before anchors were recorded)."""
    anchor_ms: int = 0
    """That heartbeat's cumulative total."""


class Increase(NamedTuple):
    """One fresh heartbeat and the GPU ms (per GPU) it adds; ``cut``: its total was over the bound."""

    heartbeat: Beat
    gpu_ms: int
    cut: bool


def clamp_time(at: datetime, received: datetime, bound: timedelta) -> datetime:
    """``at`` if it is within ``bound`` of ``received`` (the ledger's receive time), else ``received``."""
    return at if received - bound <= at <= received + bound else received


def fresh(heartbeats: Iterable[B], metered_seq: Mapping[int, int | None]) -> tuple[list[B], int]:
    """The heartbeats not metered yet, unique by ``(attempt, seq)``, in that order; and how many
    were dropped (``metered_seq``: attempt -> its last metered seq)."""
    unique: dict[tuple[int, int], B] = {}
    total = 0
    for heartbeat in heartbeats:
        total += 1
        last = metered_seq.get(heartbeat.attempt)
        if last is not None and heartbeat.seq <= last:
            continue
        unique.setdefault((heartbeat.attempt, heartbeat.seq), heartbeat)
    return [unique[key] for key in sorted(unique)], total - len(unique)


def meter_attempt(
    heartbeats: Sequence[Beat], meter: AttemptMeter, bound_count: int, tolerance: timedelta
) -> list[Increase]:
    """Rules 3 and 4 on one attempt's fresh heartbeats (seq order, times clamped); ``meter`` is
    updated as if every increase is metered."""
    tolerance_ms = tolerance // timedelta(milliseconds=1)
    increases: list[Increase] = []
    for heartbeat in heartbeats:
        total = heartbeat.gpu_ms_total
        if meter.anchor_at is None:
            meter.anchor_at, meter.anchor_ms = heartbeat.at, total
            counted = total
        else:
            wall_ms = max(0, (heartbeat.at - meter.anchor_at) // timedelta(milliseconds=1))
            allowed = meter.anchor_ms + (wall_ms + tolerance_ms) * bound_count // max(1, heartbeat.gpu_count)
            counted = min(total, allowed)
        added = max(0, counted - meter.ms)
        meter.ms += added
        meter.seq = heartbeat.seq
        increases.append(Increase(heartbeat, added, counted < total))
    return increases
