"""Spools of unsent heartbeats: metered when the ledger starts and when a sweep finds them, once.

Also: an attempt that went quiet because its runner announced the next attempt (an orphan that
found its control plane gone) is handed to the dispatcher, which a restarted control plane needs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.job import Job, JobState
from storage import layout
from storage.heartbeats import encode_heartbeat
from storage.layout import PLATFORM, user_partition
from tests.unit.ledger.builders import INTERVAL_S, Platform, beat, stream

MS = INTERVAL_S * 1000
SPOOL = layout.unsent_heartbeats("u1", "j1", 1)


@pytest.fixture
def platform() -> Platform:
    return Platform()


def write_spool(platform: Platform, first: int, last: int, *, final: bool = True) -> None:
    beats = [beat("j1", seq, final=final and seq == last) for seq in range(first, last + 1)]
    platform.bucket.create(SPOOL, b"".join(encode_heartbeat(h) + b"\n" for h in beats))


def metered_seqs(platform: Platform) -> list[tuple[int, int]]:
    return [(e.first_seq, e.last_seq) for e in platform.events_of("u1", Job.UsageMetered)]


def test_a_restarted_ledger_meters_every_spool_once_dropping_what_was_delivered(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    platform.running_job("u1", "j2")
    platform.platform.register_user("a@example.com", "hash", "user", platform.clock(), user_id="u1")
    platform.worker().handle(stream("j1", 4))  # delivered before the control plane died
    write_spool(platform, 3, 7)  # 3 and 4 were delivered as well (the pipe broke mid-write)
    platform.bucket.write(layout.unsent_heartbeats_prefix("u1") + "j2/1.jsonl", b"not a heartbeat\n")
    for partition in (PLATFORM, user_partition("u1")):
        platform.projector.catch_up(partition)

    restarted = platform.worker()
    assert restarted.recover() == 2  # j1 and j2 are watched (adopted if they still beat)
    assert metered_seqs(platform) == [(1, 4), (5, 7)]
    assert platform.job("u1", "j1").gpu_ms == 7 * MS
    assert platform.worker().recover() == 2 and metered_seqs(platform) == [(1, 4), (5, 7)]  # once


def test_the_sweep_meters_the_spool_of_an_attempt_that_went_quiet(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(stream("j1", 3))
    platform.clock.advance(2.5 * INTERVAL_S)
    worker.sweep()
    assert len(worker.spools) == 0  # not quiet yet: nothing looked for
    platform.clock.advance(1 * INTERVAL_S)
    worker.sweep()  # quiet: its spool is looked for (none yet), and the job is found lost
    assert len(worker.spools) == 1 and platform.job("u1", "j1").state == JobState.RETRYING

    write_spool(platform, 4, 6)  # the orphan ends and writes what it could not deliver
    worker.sweep()
    assert metered_seqs(platform) == [(1, 3), (4, 6)] and len(worker.spools) == 0
    worker.sweep()
    assert metered_seqs(platform) == [(1, 3), (4, 6)]


def test_a_spool_is_looked_for_only_a_while_and_not_for_attempts_that_ended(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    platform.running_job("u1", "j2")
    worker = platform.worker()
    worker.handle([*stream("j1", 2), *[beat("j2", s, final=s == 2) for s in (1, 2)]])
    platform.clock.advance(4 * INTERVAL_S)
    worker.sweep()
    assert [e.job_id for e in worker.spools.due(platform.clock())] == ["j1"]  # j2 sent its final one
    platform.clock.advance(timedelta(minutes=16).total_seconds())
    assert worker.spools.due(platform.clock()) == []


def test_a_quiet_attempt_whose_runner_announced_a_retry_goes_to_the_dispatcher(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    retried: list[tuple[str, str]] = []
    worker = platform.worker(on_retry=lambda u, j: retried.append((u, j)))
    worker.handle(stream("j1", 2))
    platform.user_app("u1").retry_job("j1", 2, "control plane unreachable: ...", platform.clock())
    platform.clock.advance(4 * INTERVAL_S)
    assert worker.sweep() == []  # not lost: it moved on by itself
    assert retried == [("u1", "j1")]


def test_a_restarted_ledger_adopts_an_attempt_that_still_heartbeats(platform: Platform) -> None:
    """Over a transport the runner publishes to whoever reads it (Pub/Sub, direct), a restarted
    ledger watches the running job and meters its heartbeats: no second attempt is started."""
    platform.running_job("u1", "j1")
    platform.platform.register_user("a@example.com", "hash", "user", platform.clock(), user_id="u1")
    platform.worker().handle(stream("j1", 3))  # the old ledger, then it dies
    for partition in (PLATFORM, user_partition("u1")):
        platform.projector.catch_up(partition)

    retried: list[tuple[str, str]] = []
    restarted = platform.worker(on_retry=lambda u, j: retried.append((u, j)))
    assert restarted.recover() == 1
    for seq in range(4, 12):  # the runner beats on, to the restarted ledger
        platform.clock.advance(INTERVAL_S)
        restarted.handle([beat("j1", seq, at=platform.clock())])
        assert restarted.sweep() == []
    job = platform.job("u1", "j1")
    assert (job.state, job.attempt, job.metered_seq) == (JobState.RUNNING, 1, {"1": 11})
    assert retried == [] and metered_seqs(platform)[-1] == (11, 11)
