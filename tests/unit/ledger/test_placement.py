"""The ledger bills an attempt by its recorded placement, never by a heartbeat's claim; heartbeats that
contradict the placement or carry another lease are rejected and recorded (``Job.HeartbeatsRejected``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from domain.job import HEARTBEAT_CONTRADICTS_PLACEMENT, HEARTBEAT_LEASE_SUPERSEDED, Job
from domain.money import cost_usd_micros
from domain.placement import Placement
from projections.audit import audit_partition
from tests.unit.ledger.builders import INTERVAL_S, T0, Platform, beat, metered, sign

T4_PRICE = 350_000
MS = INTERVAL_S * 1000


@pytest.fixture
def platform() -> Platform:
    return Platform()


def placed_job(platform: Platform, job_id: str = "j1", *, lease: str = "lease-1", count: int = 1) -> None:
    """A t4 x``count`` job whose attempt 2 runs under ``lease`` on t4 x``count``, as the backend placed it."""
    platform.set_price("t4", T4_PRICE, T0 - timedelta(days=30))
    platform.running_job("u1", job_id, gpu_type="t4", gpu_count=count)  # starts attempt 1 without a lease
    app = platform.user_app("u1")
    app.retry_job(job_id, 2, "placed again with a lease", T0)
    app.start_job(job_id, 2, T0, lease=lease, placement=Placement(gpu_type="t4", gpu_count=count, node="n1"))


def leased(seq: int, lease: str | None = "lease-1", **fields: Any) -> Any:
    fields = {"gpu_type": "t4", "attempt": 2, **fields}
    return sign(msgspec.structs.replace(beat("j1", seq, signed=False, **fields), lease=lease))


def rejections(platform: Platform) -> list[tuple[int, int, int, int, str]]:
    return [
        (e.attempt, e.first_seq, e.last_seq, e.count, e.reason)
        for e in platform.events_of("u1", Job.HeartbeatsRejected)
    ]


def test_a_heartbeat_claiming_h200_x16_on_a_t4_x1_placement_is_rejected_and_recorded(
    platform: Platform,
) -> None:
    placed_job(platform)
    worker = platform.worker()
    platform.clock.advance(INTERVAL_S * 3)
    claim = leased(3, gpu_type="h200", gpu_count=16)
    worker.handle([leased(1, gpu_ms_total=0, at=T0), leased(2), claim, leased(4)])

    assert [(e.gpu_type, e.gpu_count) for e in metered(platform, "u1")] == [("t4", 1)]
    # seq 3's claim is rejected; the attempt's time is billed at t4 x1 (seq 4 carries the cumulative total)
    assert sum(e.gpu_ms for e in metered(platform, "u1")) == 4 * MS
    assert platform.job("u1", "j1").cost_usd_micros == cost_usd_micros(4 * MS, 1, T4_PRICE)
    assert rejections(platform) == [(2, 3, 3, 1, HEARTBEAT_CONTRADICTS_PLACEMENT)]
    assert worker.stats.contradicting == 1 and worker.stats.superseded == 0


def test_a_heartbeat_of_another_lease_is_rejected_even_where_it_agrees_with_the_placement(
    platform: Platform,
) -> None:
    placed_job(platform)
    worker = platform.worker()
    platform.clock.advance(INTERVAL_S * 3)
    # a second runner of attempt 2 (its own lease) sends seqs the first one sends too
    first, second = leased(1, gpu_ms_total=0, at=T0), leased(1, "lease-2", gpu_ms_total=0, at=T0)
    worker.handle([second, leased(2, "lease-2"), first, leased(2), leased(3, None)])  # None: no lease

    assert [(e.first_seq, e.last_seq) for e in metered(platform, "u1")] == [(1, 2)]  # the first runner's
    assert rejections(platform) == [(2, 1, 3, 3, HEARTBEAT_LEASE_SUPERSEDED)]
    assert worker.stats.superseded == 3


def test_rejections_alone_are_committed_and_seen_by_the_audit(platform: Platform) -> None:
    placed_job(platform)
    worker = platform.worker()
    worker.handle([leased(1, gpu_type="h200", gpu_count=16, gpu_ms_total=0, at=T0)])

    assert metered(platform, "u1") == []
    assert rejections(platform) == [(2, 1, 1, 1, HEARTBEAT_CONTRADICTS_PLACEMENT)]
    assert worker.stats.commits == 1
    platform.projector.catch_up("users/u1")
    report = audit_partition(platform.bucket, "users/u1", platform.open_partition)
    assert report.ok and [(r.job_id, r.count, r.reason) for r in report.rejected_heartbeats] == [
        ("j1", 1, HEARTBEAT_CONTRADICTS_PLACEMENT)
    ]


def test_an_attempt_started_without_a_placement_is_billed_as_submitted(platform: Platform) -> None:
    platform.set_price("t4", T4_PRICE, T0 - timedelta(days=30))
    platform.running_job("u1", "j1", gpu_type="t4", gpu_count=2)  # a v1-style Started: no lease, no placement
    worker = platform.worker()
    platform.clock.advance(INTERVAL_S * 2)
    worker.handle(
        [
            beat("j1", 1, gpu_type="t4", gpu_count=2, gpu_ms_total=0, at=T0),
            beat("j1", 2, gpu_type="t4", gpu_count=2),
            beat("j1", 3, gpu_type="t4", gpu_count=1),  # contradicts the submitted count
        ]
    )
    assert [(e.gpu_type, e.gpu_count, e.last_seq) for e in metered(platform, "u1")] == [("t4", 2, 2)]
    assert rejections(platform) == [(1, 3, 3, 1, HEARTBEAT_CONTRADICTS_PLACEMENT)]
