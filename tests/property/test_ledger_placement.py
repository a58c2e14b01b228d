"""Ledger property: over streams mixing genuine heartbeats with ones that contradict the placement and
ones of a superseded lease, what is charged and what is rejected equal an independent fold."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.job import HEARTBEAT_CONTRADICTS_PLACEMENT, HEARTBEAT_LEASE_SUPERSEDED, Job
from domain.money import cost_usd_micros
from domain.placement import Placement
from storage.heartbeats import Heartbeat
from tests.unit.ledger.builders import T0, Platform, sign

PRICE = 350_000
LEASE = "lease-now"
KINDS = st.sampled_from(
    ["genuine"] * 3 + ["claims_other_type", "claims_other_count", "old_lease", "no_lease"]
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[list[Heartbeat]]]:
    """The placed count, and batches of heartbeats (in seq order; repeats within a batch)."""
    count = draw(st.integers(1, 4))
    beats: list[Heartbeat] = []
    total = 0  # the genuine runner's cumulative GPU ms
    for seq in range(1, draw(st.integers(1, 12)) + 1):
        total += draw(st.integers(0, 10_000))
        for kind in draw(st.lists(KINDS, min_size=1, max_size=2)):  # two runners may send one seq
            gpu_type, gpu_count, lease = "t4", count, LEASE
            if kind == "claims_other_type":
                gpu_type = "h200"
            elif kind == "claims_other_count":
                gpu_count = count % 16 + 1
            elif kind == "old_lease":
                lease = "lease-old"
            elif kind == "no_lease":
                lease = None
            heartbeat = Heartbeat(
                user_id="u1", job_id="j1", attempt=2, seq=seq, gpu_type=gpu_type, gpu_count=gpu_count,
                gpu_ms_total=total if kind == "genuine" else draw(st.integers(0, 10**6)), step=seq,
                loss=None, tokens=0,
                at=T0 + timedelta(seconds=10 * seq), lease=lease,
            )  # fmt: skip
            beats.extend([sign(heartbeat)] * draw(st.integers(1, 2)))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(beats) - 1)), max_size=3)))
    bounds = [0, *cuts, len(beats)]
    return count, [beats[a:b] for a, b in itertools.pairwise(bounds) if beats[a:b]]


def expected(count: int, batches: list[list[Heartbeat]]) -> tuple[int, dict[str, int]]:
    """The independent fold: the highest cumulative total of the genuine heartbeats (what the last
    one carries: a rejected claim in between loses the runner nothing); per reason, the distinct
    heartbeats rejected in each batch (summed over batches)."""
    billed = 0
    rejected = {HEARTBEAT_LEASE_SUPERSEDED: 0, HEARTBEAT_CONTRADICTS_PLACEMENT: 0}
    for batch in batches:
        seen: set[Heartbeat] = set()
        for h in batch:
            if h.lease != LEASE:
                reason = HEARTBEAT_LEASE_SUPERSEDED
            elif (h.gpu_type, h.gpu_count) != ("t4", count):
                reason = HEARTBEAT_CONTRADICTS_PLACEMENT
            else:
                billed = max(billed, h.gpu_ms_total)
                continue
            if h not in seen:
                seen.add(h)
                rejected[reason] += 1
    return billed, rejected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_only_heartbeats_agreeing_with_lease_and_placement_are_charged(
    stream: tuple[int, list[list[Heartbeat]]],
) -> None:
    count, batches = stream
    platform = Platform()
    platform.set_price("t4", PRICE, T0 - timedelta(days=30))
    platform.running_job("u1", "j1", gpu_type="t4", gpu_count=count)
    app = platform.user_app("u1")
    app.retry_job("j1", 2, "placed again", T0)
    app.start_job("j1", 2, T0, lease=LEASE, placement=Placement(gpu_type="t4", gpu_count=count, node="n"))
    platform.clock.advance(150)
    worker = platform.worker()
    for batch in batches:
        worker.handle(list(batch))

    ms, rejected = expected(count, batches)
    job = platform.job("u1", "j1")
    assert job.gpu_ms == ms
    assert job.cost_usd_micros == cost_usd_micros(ms, count, PRICE)
    assert {(u.gpu_type, u.gpu_count) for u in job.usage} <= {("t4", count)}
    recorded = {reason: 0 for reason in rejected}
    for event in platform.events_of("u1", Job.HeartbeatsRejected):
        recorded[event.reason] += event.count
    assert recorded == rejected
    assert worker.stats.superseded == rejected[HEARTBEAT_LEASE_SUPERSEDED]
    assert worker.stats.contradicting == rejected[HEARTBEAT_CONTRADICTS_PLACEMENT]
