"""The ledger meters only heartbeats signed with their attempt's secret; it counts and logs the rest."""

from __future__ import annotations

import logging

import msgspec
import pytest

from domain.money import cost_usd_micros
from storage.heartbeats import attempt_secret, sign_heartbeat
from tests.unit.ledger.builders import A100_PRICE, HEARTBEAT_KEY, INTERVAL_S, Platform, beat, metered, sign

MS = INTERVAL_S * 1000


@pytest.fixture
def platform() -> Platform:
    platform = Platform()
    platform.running_job("u1", "j1")
    return platform


def test_forged_wrongly_signed_and_unsigned_heartbeats_are_dropped_before_metering_and_counted(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    worker = platform.worker()
    claimed = msgspec.structs.replace(beat("j1", 2), gpu_type="h200", gpu_count=16)  # fields after signing
    other_key = sign_heartbeat(beat("j1", 3, signed=False), attempt_secret(b"not-the-key", "u1", "j1", 1))
    other_job = sign_heartbeat(beat("j1", 4, signed=False), attempt_secret(HEARTBEAT_KEY, "u1", "j2", 1))
    unsigned = beat("j1", 5, signed=False)
    with caplog.at_level(logging.ERROR, logger="runners.ledger.worker"):
        worker.handle([beat("j1", 1), claimed, other_key, other_job, unsigned, beat("j1", 6)])

    stats = worker.stats
    assert (stats.heartbeats, stats.metered, stats.unsigned, stats.forged) == (6, 2, 1, 3)
    # the dropped ones bill nothing; seq 6 carries the attempt's real total (6 intervals)
    assert [(e.first_seq, e.last_seq, e.gpu_ms, e.gpu_count) for e in metered(platform, "u1")] == [
        (1, 6, 6 * MS, 1)
    ]
    assert platform.job("u1", "j1").cost_usd_micros == cost_usd_micros(6 * MS, 1, A100_PRICE)
    (line,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "'j1'" in line and "1 unsigned and 3 forged" in line
    secret = attempt_secret(HEARTBEAT_KEY, "u1", "j1", 1)
    assert all(secret not in r.getMessage() and str(claimed.signature) not in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_batch_of_only_forged_heartbeats_writes_nothing(platform: Platform) -> None:
    worker = platform.worker()
    head = platform.user_app("u1").recorder.max_notification_id()
    worker.handle([beat("j1", 1, signed=False), sign(beat("j1", 2, signed=False), b"wrong")])
    assert (worker.stats.unsigned, worker.stats.forged, worker.stats.commits) == (1, 1, 0)
    assert platform.user_app("u1").recorder.max_notification_id() == head
    assert not metered(platform, "u1")


def test_a_ledger_with_another_platform_key_bills_nothing(platform: Platform) -> None:
    worker = platform.worker(heartbeat_key=b"another-platform-key")
    worker.handle([beat("j1", 1), beat("j1", 2)])
    assert (worker.stats.forged, worker.stats.metered) == (2, 0)
