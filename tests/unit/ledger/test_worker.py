"""LedgerWorker on a real event store (in-memory bucket), driven batch by batch."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from domain.job import JobState
from domain.money import cost_usd_micros
from runners.ledger import STOP_REASON
from storage.memory import MemoryBucket
from tests.unit.ledger.builders import (
    A100,
    A100_PRICE,
    INTERVAL_S,
    T0,
    Platform,
    alerts,
    beat,
    feed,
    metered,
    stream,
)
from tests.unit.projections.builders import FlakyBucket
from tests.unit.runners.builders import wait_for

MS = INTERVAL_S * 1000


@pytest.fixture
def platform() -> Platform:
    return Platform()


def test_a_batch_is_one_commit_per_user_with_one_usage_event_per_job(platform: Platform) -> None:
    for job_id in ("j1", "j2"):
        platform.running_job("u1", job_id, gpu_count=2)
    platform.running_job("u2", "j3")
    head = {u: platform.user_app(u).recorder.max_notification_id() for u in ("u1", "u2")}
    worker = platform.worker()

    batch = stream("j1", 5, gpu_count=2) + stream("j2", 4, gpu_count=2) + stream("j3", 3, user_id="u2")
    worker.handle(batch)

    assert worker.stats.commits == 2
    for user, n_events in (("u1", 2), ("u2", 1)):
        (commit_ids,) = {platform.user_app(user).recorder.max_notification_id() - head[user]}
        assert commit_ids == n_events
    assert [(e.first_seq, e.last_seq, e.gpu_ms, e.gpu_count) for e in metered(platform, "u1")] == [
        (1, 5, 5 * MS, 2),
        (1, 4, 4 * MS, 2),
    ]
    assert platform.job("u1", "j1").cost_usd_micros == cost_usd_micros(5 * MS, 2, A100_PRICE)
    assert platform.job("u2", "j3").cost_usd_micros == cost_usd_micros(3 * MS, 1, A100_PRICE)


def test_repeats_are_billed_once_even_by_a_restarted_ledger(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    first = platform.worker()
    feed(first, stream("j1", 6), size=4)
    first.close()
    # a new process: new applications on the same bucket, no memory of the first worker
    restarted = Platform(platform.bucket, clock=platform.clock)
    again = restarted.worker()
    again.handle([*stream("j1", 6), beat("j1", 3), *stream("j1", 2, first=7)])

    job = restarted.job("u1", "j1")
    assert job.gpu_ms == 8 * MS
    assert job.cost_usd_micros == cost_usd_micros(8 * MS, 1, A100_PRICE)
    assert again.stats.duplicates == 7 and again.stats.metered == 2


def test_reordered_heartbeats_within_a_batch_are_all_billed(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle(list(reversed(stream("j1", 5))))
    assert platform.job("u1", "j1").gpu_ms == 5 * MS
    (event,) = metered(platform, "u1")
    assert (event.first_seq, event.last_seq) == (1, 5)


def test_each_heartbeat_is_priced_at_its_own_time(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    change = T0 + timedelta(seconds=INTERVAL_S * 3)
    platform.set_price(A100, 3_000_000, change)
    platform.worker().handle(stream("j1", 6))  # seqs 1-3 at the old price (3 at the change: new)

    groups = [(e.first_seq, e.last_seq, e.usd_micros_per_hour) for e in metered(platform, "u1")]
    assert groups == [(1, 2, A100_PRICE), (3, 6, 3_000_000)]
    expected = cost_usd_micros(2 * MS, 1, A100_PRICE) + cost_usd_micros(4 * MS, 1, 3_000_000)
    assert platform.job("u1", "j1").cost_usd_micros == expected
    assert platform.billing_json("u1")["current_period"]["total_cost_usd_micros"] == expected


def test_unbillable_heartbeats_are_dropped_without_holding_back_the_rest(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    platform.running_job("u1", "j2", gpu_type="t4")  # no t4 price is set
    worker = platform.worker()
    worker.handle(
        stream("j1", 2)
        + stream("j2", 2, gpu_type="t4")
        + [beat("nope", 1), beat("j1", 1, attempt=2), beat("j9", 1, user_id="bad/user")]
    )
    assert worker.stats.rejected == 5  # two t4, the unknown job, attempt 2, the bad user id
    assert platform.job("u1", "j1").gpu_ms == 2 * MS
    assert platform.job("u1", "j2").gpu_ms == 0


def test_job_alerts_at_each_threshold_once_then_a_stop_before_max_cost_is_passed(platform: Platform) -> None:
    per_interval = cost_usd_micros(MS, 1, A100_PRICE)  # 5_833
    platform.running_job("u1", "j1", max_cost_usd_micros=10 * per_interval)
    worker = platform.worker()
    for seq in range(1, 10):
        worker.handle([beat("j1", seq)])
        if platform.job("u1", "j1").state != JobState.RUNNING:
            break
    job = platform.job("u1", "j1")
    assert job.state == JobState.STOPPING and job.stop_reason == STOP_REASON
    assert seq == 9  # 9 intervals spent; the 10th would land exactly on the limit, the 11th past it
    assert alerts(platform, "u1") == [("job:j1", 50), ("job:j1", 80)]
    # it stops at its next one
    worker.handle([beat("j1", 10), beat("j1", 11, gpu_ms_total=10 * MS + 1_500, final=True)])
    job = platform.job("u1", "j1")
    assert job.cost_usd_micros - job.max_cost_usd_micros <= per_interval
    assert alerts(platform, "u1")[-1] == ("job:j1", 100)
    assert platform.stored_billing("u1") == platform.replayed_billing("u1")


def test_the_monthly_budget_stops_every_live_job_of_the_user(platform: Platform) -> None:
    per_interval = cost_usd_micros(MS, 1, A100_PRICE)
    app = platform.user_app("u1")
    app.set_budget(12 * per_interval, T0)
    for job_id in ("j1", "j2", "j3"):
        platform.running_job("u1", job_id)
    platform.running_job("u2", "other")
    worker = platform.worker()
    seq = 0
    while app.get_job("j3").state == JobState.RUNNING:
        seq += 1
        platform.clock.advance(INTERVAL_S)
        worker.handle([beat("j1", seq), beat("j2", seq)])  # j3 beats in its own batches
        worker.handle([beat("j3", seq), beat("other", seq, user_id="u2")])
    assert {app.get_job(j).state for j in ("j1", "j2", "j3")} == {JobState.STOPPING}
    limit = 12 * per_interval
    spent = sum(app.get_job(j).cost_usd_micros for j in ("j1", "j2", "j3"))
    assert spent <= limit < 3 * cost_usd_micros((seq + 1) * MS, 1, A100_PRICE)  # the last round that fits
    budget_alerts = [t for scope, t in alerts(platform, "u1") if scope == "budget:2026-03"]
    assert budget_alerts == [t for t in (50, 80, 100) if spent * 100 >= t * limit] != []
    assert platform.job("u2", "other").state == JobState.RUNNING
    assert platform.billing_json("u1")["budget"]["monthly_limit_usd_micros"] == 12 * per_interval


def test_a_budget_set_while_the_ledger_runs_is_enforced_from_the_next_batch(platform: Platform) -> None:
    per_interval = cost_usd_micros(MS, 1, A100_PRICE)
    platform.running_job("u1", "j1")
    worker = platform.worker()
    worker.handle([beat("j1", 1)])  # the ledger has looked: u1 has no budget
    assert platform.job("u1", "j1").state == JobState.RUNNING

    platform.user_app("u1").set_budget(2 * per_interval, T0)  # another process (the API) sets one
    platform.clock.advance(INTERVAL_S)
    worker.handle([beat("j1", 2)])

    assert platform.job("u1", "j1").state == JobState.STOPPING  # a third interval would pass it
    assert [t for scope, t in alerts(platform, "u1") if scope == "budget:2026-03"] == [50, 80, 100]


def test_a_lost_race_with_the_runner_is_redone_and_billed_once(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    racer = open_racer(platform)
    worker = platform.worker()
    worker.open_user_app = lambda user_id: racer  # type: ignore[method-assign]
    worker.handle(stream("j1", 3))
    assert worker.stats.conflicts == 1
    job = platform.job("u1", "j1")
    assert (job.gpu_ms, job.step) == (3 * MS, 7)  # both writes are there
    assert len(metered(platform, "u1")) == 1


def test_a_failed_commit_raises_so_the_batch_comes_again_and_is_billed_once() -> None:
    flaky = FlakyBucket(MemoryBucket())
    platform = Platform(flaky)
    platform.running_job("u1", "j1")
    worker = platform.worker()
    flaky.fail_on_write = flaky.writes + 1
    with pytest.raises(Exception, match="injected failure"):
        worker.handle(stream("j1", 4))
    flaky.fail_on_write = None
    worker.handle(stream("j1", 4))  # the subscriber's redelivery
    assert platform.job("u1", "j1").gpu_ms == 4 * MS
    assert len(metered(platform, "u1")) == 1


def test_the_projector_is_told_and_billing_json_has_the_seed_shape(platform: Platform) -> None:
    platform.running_job("u1", "j1", gpu_count=2)
    told: list[str] = []
    worker = platform.worker()
    worker.projector = type("P", (), {"notify": lambda self, p: told.append(p)})()
    beats = stream("j1", 360, gpu_count=2)  # one hour on two GPUs, received as sent (a minute a batch)
    for i in range(0, len(beats), 6):
        platform.clock.advance((beats[i + 5].at - platform.clock()).total_seconds())
        worker.handle(beats[i : i + 6])

    assert set(told) == {"users/u1"}
    assert worker.stats.clock_clamped == worker.stats.gpu_clamped == 0
    period = platform.billing_json("u1")["current_period"]
    assert period["start_date"] == "2026-03-01"
    assert period["total_cost"] == pytest.approx(4.2)
    assert period["usage_breakdown"][A100]["seconds"] == 7200
    assert period["usage_breakdown"][A100]["cost_per_hour"] == pytest.approx(2.1)
    assert period["usage_breakdown"][A100]["total_cost"] == pytest.approx(4.2)
    assert period["jobs"][0]["job_id"] == "j1" and period["jobs"][0]["duration_seconds"] == 3600
    assert period["jobs"][0]["gpu_type"] == A100 and period["jobs"][0]["cost"] == pytest.approx(4.2)


class _Racer:
    """A UserApp stand-in whose first commit is beaten by the runner reporting progress on the same job
    (after the ledger has read the job, before it saves)."""

    def __init__(self, app: Any, runner: Any) -> None:
        self._app, self._runner, self._raced = app, runner, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    def meter_usage(self, job_ids: Any, plan: Any, at: Any, **options: Any) -> Any:
        if not self._raced:
            self._raced = True
            plan = _RacingPlan(plan, self._runner)
        return self._app.meter_usage(job_ids, plan, at, **options)


class _RacingPlan:
    def __init__(self, plan: Any, runner: Any) -> None:
        self._plan, self._runner = plan, runner

    def usage_runs(self, *args: Any, **kwargs: Any) -> Any:
        return self._plan.usage_runs(*args, **kwargs)

    def archive_runs(self, runs: Any) -> Any:
        return self._plan.archive_runs(runs)

    def rejected_heartbeats(self, job_id: str) -> Any:
        return self._plan.rejected_heartbeats(job_id)

    def limit_orders(self, *args: Any) -> Any:
        self._runner.report_progress("j1", 1, 7, 100, None, 1.5, 700, T0)
        return self._plan.limit_orders(*args)

    def before_commit(self) -> None:
        self._plan.before_commit()


def open_racer(platform: Platform) -> _Racer:
    runner = Platform(platform.bucket, clock=platform.clock).user_app("u1")  # another process
    return _Racer(platform.user_app("u1"), runner)


def test_a_trickle_lingers_to_commit_together_but_a_backlog_never_waits(platform: Platform) -> None:
    """Which batch lingers, seen without a stopwatch: with an hour's flush interval a trickle's
    ``handle`` is still lingering once its commit is durable, until the worker closes; a
    backlog's ``handle`` returns (lingering would take the hour)."""
    platform.running_job("u1", "j1")
    worker = platform.worker(flush_interval_s=3600.0)  # ManualSubscriber.max_batch 500: linger at <= 10
    trickle = threading.Thread(target=worker.handle, args=(stream("j1", 2),))
    trickle.start()
    wait_for(lambda: platform.job("u1", "j1").gpu_ms == 2 * MS, timeout=60, what="the trickle's commit")
    trickle.join(0.2)
    assert trickle.is_alive(), "a trickle of 2 heartbeats did not linger"
    worker.close()  # ends the linger
    trickle.join(60)
    assert not trickle.is_alive()

    worker = platform.worker(flush_interval_s=3600.0)
    backlog = threading.Thread(target=worker.handle, args=(stream("j1", 11, first=3),))
    backlog.start()
    backlog.join(60)  # a bound on a hang, not a wait: it returns once its commit is durable
    lingered = backlog.is_alive()
    worker.close()
    backlog.join(60)
    assert not lingered, "a backlog of 11 heartbeats lingered"
    assert platform.job("u1", "j1").gpu_ms == 13 * MS


def test_forty_late_heartbeats_lose_nothing(platform: Platform) -> None:
    """Issue 11: 40 heartbeats arriving after a later one of their attempt was metered were dropped
    unbilled ($129 and $205 lost in two runs). Each heartbeat now carries the attempt's total, so the
    later one already billed their time, and the final settles the attempt exactly."""
    platform.running_job("u1", "j1")
    worker = platform.worker()
    beats = stream("j1", 60)
    beats[-1] = beat("j1", 60, final=True)
    for batch in (beats[:10], beats[50:], beats[10:50]):  # 11-50 come last: 40 late heartbeats
        platform.clock.now = max(h.at for h in batch)
        worker.handle(batch)
    job = platform.job("u1", "j1")
    assert job.gpu_ms == 60 * MS  # the final heartbeat's total: nothing lost
    assert job.cost_usd_micros == cost_usd_micros(60 * MS, 1, A100_PRICE)
    assert (worker.stats.duplicates, worker.stats.metered) == (40, 20)
    assert platform.stored_billing("u1") == platform.replayed_billing("u1")


def test_a_lost_heartbeat_loses_nothing_the_next_one_carries_the_total(platform: Platform) -> None:
    platform.running_job("u1", "j1")
    worker = platform.worker()
    platform.clock.now = T0 + timedelta(seconds=10 * INTERVAL_S)
    worker.handle([beat("j1", s) for s in (1, 2, 5, 9, 10)])  # 3, 4, 6, 7, 8 never came
    assert platform.job("u1", "j1").gpu_ms == 10 * MS
