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
from storage.heartbeats import (
    ArchivedAttempt,
    ArchiveHeader,
    decode_archive,
    encode_archive,
    encode_heartbeat,
)
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


def test_a_users_share_of_a_batch_is_archived_once_as_received_and_named_in_every_event(
    platform: Platform,
) -> None:
    platform.running_job("u2", "j3")
    worker = platform.worker()
    batch = [
        *stream("j1", 3),
        beat("j1", 2),
        *stream("j2", 2),
        beat("j2", 1, attempt=2),
        *stream("j3", 2, user_id="u2"),
    ]  # j2 attempt 2: never started
    worker.handle(batch)

    (events_j1, events_j2) = metered(platform, "u1")
    (name,) = archives(platform)
    (other,) = platform.bucket.list(f"{user_partition('u2')}/heartbeats/")  # each user's own object
    assert worker.stats.archives == 2
    data = platform.bucket.read(name)
    assert name == layout.heartbeat_batch("u1", platform.clock.now, hashlib.sha256(data).hexdigest())
    assert layout.check_key(name) == layout.check_key(other) == "heartbeat batch"
    for event in (events_j1, events_j2):
        assert (event.archive, event.archive_sha256) == (name, hashlib.sha256(data).hexdigest())
        assert (event.anchor_at, event.anchor_ms) == (T0 + timedelta(seconds=INTERVAL_S), MS)
    archive = decode_archive(data)
    assert archive.header.received == platform.clock.now
    assert [(a.job_id, a.attempt, a.bound_count, a.refused) for a in archive.header.attempts] == [
        ("j1", 1, 1, []),
        ("j2", 1, 1, []),
    ]  # j2 attempt 2 was priced nothing: not archived
    assert [(h.job_id, h.seq) for h in archive.heartbeats] == [  # attempt by attempt, arrival order
        ("j1", 1), ("j1", 2), ("j1", 3), ("j1", 2), ("j2", 1), ("j2", 2)
    ]  # fmt: skip
    mine = [h for h in batch if h.user_id == "u1" and h.attempt == 1]
    assert data.splitlines()[1:] == [encode_heartbeat(h) for h in mine]
    report = metering(platform)
    assert report.ok and (report.archives, report.archived_events) == (1, 2)  # read once for both jobs


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


def test_the_audit_names_a_tampered_archive_and_a_missing_one_for_every_attempt_in_it(
    platform: Platform,
) -> None:
    worker = platform.worker()
    worker.handle(stream("j1", 3) + stream("j2", 3))
    (first,) = archives(platform)
    platform.clock.advance(INTERVAL_S)
    worker.handle(stream("j1", 1, first=4) + stream("j2", 1, first=4))
    (second,) = set(archives(platform)) - {first}
    data = platform.bucket.read(first)
    platform.bucket.write(first, data.replace(b'"gpu_ms_total":30000', b'"gpu_ms_total":3000'))
    platform.bucket.delete(second)
    report = metering(platform)
    assert [(d.job_id, d.attempt, d.first_seq, d.last_seq, d.problem) for d in report.differences] == [
        ("j1", 1, 1, 3, "sha256 mismatch"),
        ("j1", 1, 4, 4, "missing archive"),
        ("j2", 1, 1, 3, "sha256 mismatch"),
        ("j2", 1, 4, 4, "missing archive"),
    ]
    assert report.archives == 2  # each read once
    user = audited(platform)
    assert not user.ok and not user.differences and user.chain.ok  # the views agree: the metering does not


def _run_of(name: str, sha256: str, beats: list[Any], gpu_ms: int) -> UsageRun:
    """The run of ``beats`` (j1 attempt 1, anchored at the first) naming archive ``name``."""
    return UsageRun(job_id="j1", attempt=1, first_seq=beats[0].seq, last_seq=beats[-1].seq, gpu_type=A100,
                    gpu_count=1, gpu_ms=gpu_ms, usd_micros_per_hour=A100_PRICE, period="2026-03",
                    last_at=beats[-1].at, heartbeats=len(beats), archive=name, archive_sha256=sha256,
                    anchor_at=beats[0].at, anchor_ms=beats[0].gpu_ms_total)  # fmt: skip


def test_the_audit_names_usage_the_archive_does_not_give_and_forged_and_foreign_heartbeats() -> None:
    """An archive and a log that agree on its sha256 (a ledger bug, or both rewritten): the
    recompute still names a heartbeat of no attempt the archive lists, a forged heartbeat, and
    the usage it does not give."""
    platform = Platform()
    platform.running_job("u1", "j1")
    forged = msgspec.structs.replace(beat("j1", 3), gpu_ms_total=90 * MS)  # its signature no longer fits
    beats = [*stream("j1", 2), forged]
    received = T0 + timedelta(seconds=40)
    header = ArchiveHeader(received=received, clock_bound_ms=300_000, gpu_tolerance_ms=2_000,
                           attempts=[ArchivedAttempt(job_id="j1", attempt=1, bound_count=1)])  # fmt: skip
    archive = encode_archive(header, [*beats, beat("j9", 1)])
    name = layout.heartbeat_batch("u1", received, archive.sha256)
    platform.bucket.create(name, archive.data)
    run = _run_of(name, archive.sha256, beats, 32 * MS)
    platform.user_app("u1").meter_usage(["j1"], FixedUsage([run]), received)
    problems = [(d.job_id, d.problem, d.first_seq, d.last_seq) for d in metering(platform).differences]
    # seq 3 dropped as forged: the archive gives 1 interval after the anchor, not 31
    assert problems == [
        ("j9", "foreign heartbeat", 1, 1),
        ("j1", "forged heartbeat", 3, 3),
        ("j1", "differs", 1, 3),
    ]
    (foreign, differs) = metering(platform, key=None).differences  # unverified: the clock rule cuts seq 3
    assert foreign.problem == "foreign heartbeat"
    assert differs.problem == "differs" and "metered 320000 GPU ms, the archive gives " in differs.detail


def test_an_archive_of_an_earlier_release_one_object_per_job_attempt_is_audited_as_before() -> None:
    """Format v1 (``layout.heartbeat_archive``): a clean one audits clean; a heartbeat of another
    attempt in it is foreign, as it was."""
    platform = Platform()
    platform.running_job("u1", "j1")
    received = T0 + timedelta(seconds=40)
    old_header = {"format": "tune.heartbeats.v1", "received": received, "clock_bound_ms": 300_000,
                  "gpu_tolerance_ms": 2_000, "bound_count": 1, "refused": []}  # fmt: skip
    named = []
    for beats, extra in ((stream("j1", 2), []), (stream("j1", 2, first=3), [beat("j1", 1, attempt=2)])):
        data = b"\n".join([msgspec.json.encode(old_header), *map(encode_heartbeat, [*beats, *extra])]) + b"\n"
        sha = hashlib.sha256(data).hexdigest()
        name = layout.heartbeat_archive("u1", "j1", 1, beats[0].seq, beats[-1].seq, sha)
        platform.bucket.create(name, data)
        named.append(_run_of(name, sha, beats, 2 * MS))
    app = platform.user_app("u1")
    app.meter_usage(["j1"], FixedUsage(named[:1]), received)
    report = metering(platform)
    assert report.ok and (report.archives, report.archived_events) == (1, 1)
    app.meter_usage(["j1"], FixedUsage(named[1:]), received)
    report = metering(platform)
    assert [(d.job_id, d.attempt, d.problem, d.first_seq) for d in report.differences] == [
        ("j1", 1, "foreign heartbeat", 1)
    ]
    assert report.archives == 2


def test_usage_from_before_the_archive_is_reported_not_archived_not_as_a_problem(platform: Platform) -> None:
    app = platform.user_app("u1")
    meter(app, "j1", 1, 1, 4, "a100-80gb", 1, 4 * MS, 2_100_000, "2026-03", T0)
    report = metering(platform)
    assert report.ok and (report.archives, report.not_archived) == (0, 1)
    platform.worker().handle([beat("j1", 5, gpu_ms_total=5 * MS)])  # the next archive starts from the log
    report = metering(platform)
    assert report.ok and (report.archives, report.not_archived) == (1, 1)
    assert platform.job("u1", "j1").gpu_ms == 5 * MS
