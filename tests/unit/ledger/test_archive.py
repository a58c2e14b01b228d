"""The raw heartbeat archive: written before the commit that meters it, named and hashed in its
``UsageMetered`` events, and recomputed by the audit, which names every difference."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from domain.metering import FixedUsage, UsageRun
from projections.audit import audit_bucket
from projections.metering_audit import audit_metering
from projections.replay import read_events
from storage import layout
from storage.heartbeats import ArchiveHeader, decode_archive, encode_archive, encode_heartbeat
from storage.layout import user_partition
from tests.unit.ledger.builders import (
    A100,
    A100_PRICE,
    HEARTBEAT_KEY,
    INTERVAL_S,
    T0,
    Platform,
    beat,
    metered,
    stream,
)
from tests.usage import meter

MS = INTERVAL_S * 1000


@pytest.fixture
def platform() -> Platform:
    platform = Platform()
    platform.running_job("u1", "j1")
    platform.running_job("u1", "j2")
    platform.clock.now = T0 + timedelta(seconds=6 * INTERVAL_S)
    return platform


def metering(platform: Platform, key: bytes | None = HEARTBEAT_KEY) -> Any:
    app = platform.user_app("u1")
    return audit_metering(platform.bucket, (e for _, e in read_events(app)), key)


def audited(platform: Platform, key: bytes | None = HEARTBEAT_KEY) -> Any:
    """The audit of u1's partition (its views caught up first)."""
    platform.projector.catch_up(user_partition("u1"))
    (report,) = [r for r in audit_bucket(platform.bucket, user="u1", heartbeat_key=key) if r.metering]
    return report


def archives(platform: Platform) -> list[str]:
    return sorted(platform.bucket.list(f"{user_partition('u1')}/heartbeats/"))


def test_each_job_attempt_of_a_batch_is_archived_once_as_received_and_named_in_its_events(
    platform: Platform,
) -> None:
    worker = platform.worker()
    batch = [
        *stream("j1", 3),
        beat("j1", 2),
        *stream("j2", 2),
        beat("j2", 1, attempt=2),
    ]  # j2 attempt 2: never started
    worker.handle(batch)

    (events_j1, events_j2) = metered(platform, "u1")
    names = archives(platform)
    assert len(names) == 2 and worker.stats.archives == 2
    assert names[0].startswith("users/u1/heartbeats/j1/1/1-3.") and names[1].startswith(
        "users/u1/heartbeats/j2/1/1-2."
    )
    assert {layout.check_key(n) for n in names} == {"heartbeat archive"}
    for event, name in ((events_j1, names[0]), (events_j2, names[1])):
        data = platform.bucket.read(name)
        assert (event.archive, event.archive_sha256) == (name, hashlib.sha256(data).hexdigest())
        assert (event.anchor_at, event.anchor_ms) == (T0 + timedelta(seconds=INTERVAL_S), MS)
    archive = decode_archive(platform.bucket.read(names[0]))
    assert archive.header.received == platform.clock.now
    assert [h.seq for h in archive.heartbeats] == [1, 2, 3, 2]  # arrival order, the repeat included
    assert data.splitlines()[1:] == [
        encode_heartbeat(h) for h in batch if h.job_id == "j2" and h.attempt == 1
    ]
    assert metering(platform).ok and metering(platform).archives == 2


def test_a_redelivered_batch_writes_no_second_archive(platform: Platform) -> None:
    worker = platform.worker()
    worker.handle(stream("j1", 3))
    worker.handle(stream("j1", 3))  # all already metered: nothing to archive
    assert len(archives(platform)) == 1


def test_the_audit_recomputes_clean_usage_from_the_archive(platform: Platform) -> None:
    worker = platform.worker()
    worker.handle(stream("j1", 2))
    platform.clock.advance(INTERVAL_S)
    ahead = beat("j1", 4, at=T0 + timedelta(days=31))
    worker.handle([beat("j1", 5), beat("j1", 3), ahead])
    report = audited(platform)
    assert report.ok and report.metering is not None
    assert (report.metering.archives, report.metering.not_archived) == (2, 0)


def test_the_audit_names_a_tampered_archive_and_a_missing_one(platform: Platform) -> None:
    worker = platform.worker()
    worker.handle(stream("j1", 3) + stream("j2", 3))
    j1, j2 = archives(platform)
    data = platform.bucket.read(j1)
    platform.bucket.write(j1, data.replace(b'"gpu_ms_total":30000', b'"gpu_ms_total":3000'))
    platform.bucket.delete(j2)
    report = metering(platform)
    assert [(d.job_id, d.attempt, d.first_seq, d.last_seq, d.problem) for d in report.differences] == [
        ("j1", 1, 1, 3, "sha256 mismatch"),
        ("j2", 1, 1, 3, "missing archive"),
    ]
    user = audited(platform)
    assert not user.ok and not user.differences and user.chain.ok  # the views agree: the metering does not


def test_the_audit_names_usage_the_archive_does_not_give_and_forged_heartbeats() -> None:
    """An archive and a log that agree on its sha256 (a ledger bug, or both rewritten): the
    recompute still names a forged heartbeat, and the usage it does not give."""
    platform = Platform()
    platform.running_job("u1", "j1")
    forged = msgspec.structs.replace(beat("j1", 3), gpu_ms_total=90 * MS)  # its signature no longer fits
    beats = [*stream("j1", 2), forged]
    received = T0 + timedelta(seconds=40)
    header = ArchiveHeader(received=received, clock_bound_ms=300_000, gpu_tolerance_ms=2_000, bound_count=1)
    archive = encode_archive(header, beats)
    name = layout.heartbeat_archive("u1", "j1", 1, 1, 3, archive.sha256)
    platform.bucket.create(name, archive.data)
    run = UsageRun(job_id="j1", attempt=1, first_seq=1, last_seq=3, gpu_type=A100, gpu_count=1,
                   gpu_ms=32 * MS, usd_micros_per_hour=A100_PRICE, period="2026-03", last_at=beats[-1].at,
                   heartbeats=3, archive=name, archive_sha256=archive.sha256,
                   anchor_at=beats[0].at, anchor_ms=MS)  # fmt: skip
    platform.user_app("u1").meter_usage(["j1"], FixedUsage([run]), T0 + timedelta(seconds=40))
    problems = [(d.problem, d.first_seq, d.last_seq) for d in metering(platform).differences]
    # seq 3 dropped as forged: the archive gives 1 interval after the anchor, not 31
    assert problems == [("forged heartbeat", 3, 3), ("differs", 1, 3)]
    (differs,) = metering(platform, key=None).differences  # unverified, seq 3 is cut by the clock rule
    assert differs.problem == "differs" and "metered 320000 GPU ms, the archive gives " in differs.detail


def test_usage_from_before_the_archive_is_reported_not_archived_not_as_a_problem(platform: Platform) -> None:
    app = platform.user_app("u1")
    meter(app, "j1", 1, 1, 4, "a100-80gb", 1, 4 * MS, 2_100_000, "2026-03", T0)
    report = metering(platform)
    assert report.ok and (report.archives, report.not_archived) == (0, 1)
    platform.worker().handle([beat("j1", 5, gpu_ms_total=5 * MS)])  # the next archive starts from the log
    report = metering(platform)
    assert report.ok and (report.archives, report.not_archived) == (1, 1)
    assert platform.job("u1", "j1").gpu_ms == 5 * MS
