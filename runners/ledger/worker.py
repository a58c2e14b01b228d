"""``LedgerWorker``: heartbeats in; metered usage, alerts and stops out; one commit per user per batch.

For each batch the subscriber hands over (``handle``):

1. Prices: one ``PriceSchedule`` (``PlatformApp.price_list`` at the batch's earliest
   heartbeat) gives the price in force at each heartbeat's ``at``.
2. Per user, per job: load the Job, drop what it has metered already (``Job.metered_seq``,
   rebuilt from events, so dedupe survives a restart) and repeats, group the rest into
   usage runs (``runners.ledger.metering``) and record one ``UsageMetered`` per run.
3. Limits (``runners.ledger.limits``): the user's spend per period comes from the same fold
   as billing.json (``runners.ledger.spend``); alerts at the thresholds of each job's
   ``max_cost`` and of the monthly budget, and a ``budget_exceeded`` stop request where
   the next interval would pass a limit.
4. One ``Application.save`` per user carries every job and the budget it changed; a lost
   race (``RecordConflictError``: e.g. the runner reported progress on the same job) is
   redone from a fresh load. Then the projector is told (``notify("users/<uid>")``).
5. ``handle`` returns only after every commit is durable: only then does the subscriber ack.

Heartbeats that cannot be billed (unknown user or job, an attempt that never started, a GPU
type with no price in force) are logged, counted in ``stats.rejected`` and dropped: holding
them back would stall every job behind them. They are unbilled time.

Batching: a small batch (at most 1/50 of the subscriber's ``max_batch``: 20 of 1,000) means
heartbeats trickle in; the handler then lingers until ``flush_interval_s`` has passed since
it began, so what arrives meanwhile is committed together (at most one ledger commit per
user per ``flush_interval_s`` at low rates). At higher rates batches are bigger by
themselves, and a backlog never waits. (Not "not full": Pub/Sub's ordered pulls return at
most 100 messages on the emulator, and fewer than asked on the real service, while a
backlog waits.)

``start()`` runs the subscriber and a thread calling ``sweep()`` (the lost-job detector)
every ``sweep_interval_s``; ``close()`` stops both.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from eventsourcing.persistence import RecordConflictError

from domain.budget import DEFAULT_THRESHOLDS_PCT, Budget
from domain.errors import NotFound, PlatformError
from domain.ids import check_id
from domain.job import Job
from domain.job_states import LIMIT_STOPPABLE_STATES
from domain.metering import JobPolicy, PriceSchedule, job_policy, marginal_cost_usd_micros
from domain.money import UsageGroupKey, period_of
from projections.billing import BillingState
from runners.ledger.aggregates import AggregateCache, last_position, save
from runners.ledger.limits import JOB_SCOPE, STOP_REASON, BudgetOutlook, JobOutlook, plan_limits
from runners.ledger.live import LiveJob, LiveJobs
from runners.ledger.lost import LOST_AFTER_INTERVALS, LostJob, LostJobDetector, OnRetry, watch_running_jobs
from runners.ledger.metering import UsageRun, by_user_and_job, fresh_heartbeats, usage_runs
from runners.ledger.spend import UserSpend
from storage import Bucket, layout
from storage.clock import Clock, utc_now
from storage.eventstore import pinned_reads
from storage.eventstore.log import io_workers_for
from storage.heartbeats import Heartbeat, HeartbeatSubscriber

__all__ = ["LedgerStats", "LedgerWorker", "Notifier"]

log = logging.getLogger(__name__)

_TRIES = 10
_LINGER_FRACTION = 50  # linger only after a batch of at most max_batch / 50 heartbeats


class Notifier(Protocol):
    """What the worker needs of a projector: ``projections.projector.Projector`` has it."""

    def notify(self, partition: str) -> None: ...


@dataclass
class LedgerStats:
    """Counters since start (read them from any thread; they are only ever added to)."""

    batches: int = 0
    heartbeats: int = 0
    metered: int = 0
    """Heartbeats billed."""
    duplicates: int = 0
    """Heartbeats dropped as already metered or repeated."""
    rejected: int = 0
    """Heartbeats that could not be billed (see the module docstring)."""
    events: int = 0
    commits: int = 0
    conflicts: int = 0
    """Saves redone after another writer got there first."""
    alerts: int = 0
    stops: int = 0
    lost: int = 0
    last_commit: dict[str, int] = field(default_factory=dict)
    """The last notification id the ledger wrote, per partition (``users/<uid>``)."""


@dataclass
class _UserOutcome:
    """What metering one user's share of a batch did (applied to the stats once it is saved)."""

    metered: int = 0
    duplicates: int = 0
    rejected: int = 0
    alerts: int = 0
    stops: int = 0
    conflicts: int = 0
    events: int = 0
    position: int | None = None
    live: list[LiveJob] = field(default_factory=list)


@dataclass
class _Metered:
    """One job's part of the batch after metering."""

    job: Job
    last: Heartbeat
    price: int
    next_usd_micros: int = 0
    interval_ms: int = 0


class LedgerWorker:
    """Meters heartbeats from ``subscriber`` into each user's event log.

    Args:
        bucket: the bucket the event store lives in (``recover`` reads its views).
        platform_app: the ``PlatformApp`` (prices).
        open_user_app: the ``UserApp`` of a user id (one per user: the caller caches them).
        subscriber: where heartbeats come from (not started yet).
        projector: told which partitions the ledger wrote (None: nothing in-process to tell).
        clock: the ledger's time (event ``at``, liveness).
        flush_interval_s: how long a trickle of heartbeats is gathered before it is committed.
        sweep_interval_s: how often ``start()``'s thread runs the lost-job sweep.
        lost_after_intervals: heartbeat intervals of silence before a job is lost.
        on_retry: called with ``(user_id, job_id)`` when a lost job is set to retry.
        parallel: users metered at once (their commits are independent I/O; 1: one by one); None:
            as many as the bucket's I/O is worth (``io_workers_for``: one for a folder, several remote).
    """

    def __init__(
        self,
        bucket: Bucket,
        platform_app: Any,
        open_user_app: Callable[[str], Any],
        subscriber: HeartbeatSubscriber,
        projector: Notifier | None = None,
        *,
        clock: Clock = utc_now,
        flush_interval_s: float = 0.2,
        sweep_interval_s: float = 1.0,
        lost_after_intervals: int = LOST_AFTER_INTERVALS,
        on_retry: OnRetry | None = None,
        parallel: int | None = None,
    ) -> None:
        self.bucket = bucket
        self.platform_app = platform_app
        self.open_user_app = open_user_app
        self.subscriber = subscriber
        self.projector = projector
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.intervals = lost_after_intervals
        self.stats = LedgerStats()
        self.live = LiveJobs()
        self.lost = LostJobDetector(
            open_user_app, self.live, intervals=lost_after_intervals, notify=self._notify, on_retry=on_retry
        )
        self._spend: dict[str, UserSpend] = {}
        self._aggregates = AggregateCache()
        self._policies: dict[tuple[str, str], JobPolicy] = {}
        self._linger_below = max(1, int(getattr(subscriber, "max_batch", 500)) // _LINGER_FRACTION)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        parallel = io_workers_for(bucket) if parallel is None else parallel
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="ledger") if parallel > 1 else None

    # ---- lifecycle ----

    def start(self) -> None:
        """Start consuming heartbeats and sweeping for lost jobs."""
        self.subscriber.start(self.handle)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="ledger-lost-sweep", daemon=True)
        self._sweeper.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop: the batch in hand is finished (and acked) or released; idempotent."""
        self._stop.set()
        self.subscriber.close(timeout)
        if self._sweeper is not None:
            self._sweeper.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> LedgerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def watch(self, user_id: str, job_id: str, attempt: int, *, interval_s: float) -> None:
        """Expect heartbeats from an attempt launched now (the dispatcher's ``on_launch``), so a
        runner that dies before its first heartbeat is found lost too."""
        self.lost.watch(user_id, job_id, attempt, self.clock(), interval_ms=round(interval_s * 1000))

    def recover(self) -> int:
        """After a restart: watch every job the views show running (see ``watch_running_jobs``)."""
        return watch_running_jobs(self.lost, self.bucket, self.clock())

    def sweep(self) -> list[LostJob]:
        """Run the lost-job detector once, now."""
        lost = self.lost.sweep(self.clock())
        self.stats.lost += len(lost)
        return lost

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_interval_s):
            try:
                self.sweep()
            except Exception:  # the sweep must outlive one bad round (e.g. the bucket briefly down)
                log.exception("lost-job sweep failed")

    # ---- the handler ----

    def handle(self, batch: list[Heartbeat]) -> None:
        """Meter one batch; returns once everything it wrote is durable (then the subscriber acks).

        Users are metered in parallel on a remote bucket (each user's commit is independent
        I/O), one after another on a folder (threads there only contend for the GIL); if any
        user's commit failed, the others stand and the error is raised: the batch comes again
        and what was committed is dropped as already metered. Each user's reads look for newer
        commits once (``pinned_reads``); a commit that lands meanwhile fails the save, which is
        redone from fresh reads.
        """
        began = time.monotonic()
        received = self.clock()
        prices = self._price_schedule(batch)
        users = by_user_and_job(batch)
        if len(users) > 1 and self._pool is not None:
            futures = [
                self._pool.submit(self._meter_user, u, jobs, prices, received) for u, jobs in users.items()
            ]
            results = [_result(f) for f in futures]
        else:
            results = [_result_of(self._meter_user, u, jobs, prices, received) for u, jobs in users.items()]
        failure = None
        for user_id, result in zip(users, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                self._settle(user_id, result)
        if failure is not None:
            raise failure
        self.stats.batches += 1
        self.stats.heartbeats += len(batch)
        self._linger(began, len(batch))

    def _price_schedule(self, batch: Sequence[Heartbeat]) -> PriceSchedule | None:
        if not batch:
            return None
        try:
            return PriceSchedule(self.platform_app.price_list(min(h.at for h in batch)))
        except NotFound:
            return None

    def _linger(self, began: float, size: int) -> None:
        if size > self._linger_below:
            return  # heartbeats arrive faster than they need lingering, or a backlog waits
        left = self.flush_interval_s - (time.monotonic() - began)
        if left > 0:
            self._stop.wait(left)

    def _meter_user(
        self, user_id: str, jobs: dict[str, list[Heartbeat]], prices: PriceSchedule | None, received: datetime
    ) -> _UserOutcome:
        try:
            app = self.open_user_app(check_id(user_id, kind="user_id"))
        except PlatformError as exc:
            count = sum(len(h) for h in jobs.values())
            log.error("ledger: %d heartbeat(s) of user %.80r dropped, unbilled: %s", count, user_id, exc)
            return _UserOutcome(rejected=count)
        spend = self._spend.setdefault(user_id, UserSpend())
        conflicts = 0
        while True:
            try:
                with pinned_reads(app):  # one look for newer commits, not one per aggregate read
                    outcome = self._meter_once(app, user_id, jobs, prices, received, spend)
            except RecordConflictError:
                conflicts += 1
                if conflicts == _TRIES:
                    raise
                time.sleep(0.002 * conflicts)
            else:
                outcome.conflicts = conflicts
                return outcome

    def _settle(self, user_id: str, outcome: _UserOutcome) -> None:
        stats = self.stats
        stats.metered += outcome.metered
        stats.duplicates += outcome.duplicates
        stats.rejected += outcome.rejected
        stats.alerts += outcome.alerts
        stats.stops += outcome.stops
        stats.conflicts += outcome.conflicts
        for entry in outcome.live:
            self.live.record(entry)
        if outcome.position is not None:
            partition = layout.user_partition(user_id)
            stats.events += outcome.events
            stats.commits += 1
            stats.last_commit[partition] = outcome.position
            self._notify(partition)

    def _notify(self, partition: str) -> None:
        if self.projector is not None:
            self.projector.notify(partition)

    # ---- one user's share of a batch, one commit ----

    def _meter_once(
        self,
        app: Any,
        user_id: str,
        jobs: dict[str, list[Heartbeat]],
        prices: PriceSchedule | None,
        at: datetime,
        spend: UserSpend,
    ) -> _UserOutcome:
        outcome = _UserOutcome()
        touched: list[Job | Budget] = []
        try:
            metered: dict[str, _Metered] = {}
            for job_id, heartbeats in jobs.items():
                found = self._meter_job(app, user_id, job_id, heartbeats, prices, at, outcome)
                if found is not None:
                    metered[job_id] = found
                    touched.append(found.job)
            if not metered:
                return outcome
            budget = self._aggregates.get(app, user_id, Budget, Budget.create_id(user_id))
            touched.extend([budget] if budget is not None else [])
            spend.refresh(app)
            spent = spend.after([e for part in metered.values() for e in part.job.pending_events])
            touched.extend(self._limits(app, user_id, metered, budget, prices, at, spent, outcome))
            outcome.events = sum(len(a.pending_events) for a in touched)
            recordings = save(app, *touched)
            spend.advance(recordings, spent)
            outcome.position = last_position(recordings)
        except BaseException:
            self._aggregates.discard(user_id, touched)  # changed but not saved
            raise
        return outcome

    def _meter_job(
        self,
        app: Any,
        user_id: str,
        job_id: str,
        heartbeats: list[Heartbeat],
        prices: PriceSchedule | None,
        at: datetime,
        outcome: _UserOutcome,
    ) -> _Metered | None:
        try:
            job = self._aggregates.get(app, user_id, Job, Job.create_id(check_id(job_id, kind="job_id")))
        except PlatformError:
            job = None
        if job is None:
            outcome.rejected += len(heartbeats)
            log.error("ledger: %d heartbeat(s) of unknown job %.80r dropped", len(heartbeats), job_id)
            return None
        fresh = fresh_heartbeats(heartbeats, job.metered_seq)
        outcome.duplicates += fresh.dropped
        priced: list[tuple[Heartbeat, int]] = []
        for heartbeat in fresh.heartbeats:
            price = _price_or_reason(job, heartbeat, prices)
            if isinstance(price, str):
                outcome.rejected += 1
                log.error("ledger: heartbeat %s dropped, unbilled: %s", heartbeat.key, price)
            else:
                priced.append((heartbeat, price))
        runs: list[UsageRun] = []
        for run in usage_runs(priced):
            try:
                job.meter_usage(
                    run.attempt,
                    run.first_seq,
                    run.last_seq,
                    run.gpu_type,
                    run.gpu_count,
                    run.gpu_ms,
                    run.usd_micros_per_hour,
                    run.period,
                    at,
                )
            except PlatformError as exc:
                outcome.rejected += run.heartbeats
                log.error("ledger: %d heartbeat(s) of %s dropped, unbilled: %s", run.heartbeats, job_id, exc)
            else:
                outcome.metered += run.heartbeats
                runs.append(run)
        if not runs:
            return None
        last, price = priced[-1]
        return _Metered(job, last, price)

    # ---- limits ----

    def _limits(
        self,
        app: Any,
        user_id: str,
        metered: dict[str, _Metered],
        budget: Budget | None,
        prices: PriceSchedule | None,
        at: datetime,
        spent: BillingState,
        outcome: _UserOutcome,
    ) -> list[Job]:
        """Raise the alerts and request the stops due; return the jobs outside the batch it changed."""
        for part in metered.values():
            self._outlook(part, self._policy(user_id, part.job), prices)
        others = [e for e in self.live.running(user_id, at, self.intervals) if e.job_id not in metered]
        thresholds = budget.thresholds_pct if budget is not None else list(DEFAULT_THRESHOLDS_PCT)
        jobs = [_job_outlook(job_id, part) for job_id, part in metered.items()]
        actions = plan_limits(jobs, _budget_outlook(metered, budget, spent, others), thresholds)
        for alert in actions.job_alerts:
            job = metered[alert.job_id].job
            job.raise_alert(
                JOB_SCOPE, alert.threshold_pct, alert.spent_usd_micros, alert.limit_usd_micros, at
            )
        for budget_alert in actions.budget_alerts:
            assert budget is not None  # budget alerts need a monthly limit
            budget.raise_alert(
                budget_alert.period, budget_alert.threshold_pct, budget_alert.spent_usd_micros, at
            )
        outcome.alerts += len(actions.job_alerts) + len(actions.budget_alerts)
        stop = [metered[job_id].job for job_id in sorted(set(actions.stop_jobs))]
        changed: list[Job] = []
        if actions.stop_all_live:
            stop = [part.job for part in metered.values()]
            for entry in others:
                job = self._aggregates.get(app, user_id, Job, Job.create_id(entry.job_id))
                if job is not None:
                    stop.append(job)
                    changed.append(job)
        for job in stop:
            if job.state in LIMIT_STOPPABLE_STATES:
                job.request_stop(STOP_REASON, at)
                outcome.stops += 1
        outcome.live = [_live_entry(user_id, job_id, part, at) for job_id, part in metered.items()]
        return changed

    def _policy(self, user_id: str, job: Job) -> JobPolicy:
        """The job's interval and retries (its config never changes: parsed once)."""
        policy = self._policies.get((user_id, job.job_id))
        if policy is None:
            if len(self._policies) > 100_000:
                self._policies.clear()
            policy = self._policies[(user_id, job.job_id)] = job_policy(job.config)
        return policy

    @staticmethod
    def _outlook(part: _Metered, policy: JobPolicy, prices: PriceSchedule | None) -> None:
        """Set what the job's next heartbeat interval is and will cost."""
        last, job = part.last, part.job
        part.interval_ms = max(policy.heartbeat_interval_ms, last.gpu_ms)
        if last.final and last.attempt == job.attempt:
            return  # its attempt has ended; a next one starts over from its first heartbeat
        then = last.at + timedelta(milliseconds=part.interval_ms)
        price = part.price
        if prices is not None:
            with contextlib.suppress(NotFound):
                price = prices.price_at(last.gpu_type, then)
        key = UsageGroupKey(period_of(then), job.job_id, last.gpu_type, last.gpu_count, price)
        part.next_usd_micros = marginal_cost_usd_micros(job.usage, key, part.interval_ms)


def _result(future: Future[_UserOutcome]) -> _UserOutcome | BaseException:
    try:
        return future.result()
    except BaseException as exc:
        return exc


def _result_of(function: Callable[..., _UserOutcome], *args: Any) -> _UserOutcome | BaseException:
    try:
        return function(*args)
    except BaseException as exc:
        return exc


def _next_period(part: _Metered) -> str:
    return period_of(part.last.at + timedelta(milliseconds=part.interval_ms))


def _job_outlook(job_id: str, part: _Metered) -> JobOutlook:
    job = part.job
    return JobOutlook(
        job_id=job_id,
        spent_usd_micros=job.cost().cost_usd_micros,
        next_usd_micros=part.next_usd_micros,
        max_cost_usd_micros=job.max_cost_usd_micros,
        alerted_pct=frozenset(int(a.partition(":")[2]) for a in job.alerts if a.startswith(f"{JOB_SCOPE}:")),
        stoppable=job.state in LIMIT_STOPPABLE_STATES,
    )


def _budget_outlook(
    metered: dict[str, _Metered], budget: Budget | None, state: BillingState, others: list[LiveJob]
) -> BudgetOutlook:
    """The user's spend per period with this batch's usage (``state``: the fold billing.json uses),
    and the next interval of every live job of the user."""
    next_period = max(_next_period(part) for part in metered.values())
    pending = [e for part in metered.values() for e in part.job.pending_events]
    periods = {e.period for e in pending if isinstance(e, Job.UsageMetered)} | {next_period}
    return BudgetOutlook(
        monthly_limit_usd_micros=budget.monthly_limit_usd_micros if budget is not None else None,
        period=next_period,
        spent_by_period={p: UserSpend.period_total(state, p) for p in periods},
        next_usd_micros=sum(p.next_usd_micros for p in metered.values())
        + sum(e.next_usd_micros for e in others),
        alerted={p: frozenset(ts) for p, ts in (budget.alerts.items() if budget is not None else ())},
    )


def _live_entry(user_id: str, job_id: str, part: _Metered, at: datetime) -> LiveJob:
    return LiveJob(
        user_id=user_id,
        job_id=job_id,
        attempt=part.last.attempt,
        interval_ms=part.interval_ms,
        last_seen=at,
        last_at=part.last.at,
        next_usd_micros=part.next_usd_micros,
        final=part.last.final,
    )


def _price_or_reason(job: Job, heartbeat: Heartbeat, prices: PriceSchedule | None) -> str | int:
    """The price in force for ``heartbeat``, or why it cannot be billed."""
    if not 1 <= heartbeat.attempt <= job.attempt:
        return f"attempt {heartbeat.attempt} of job {job.job_id} never started (last: {job.attempt})"
    if prices is None:
        return "no prices are set"
    try:
        return prices.price_at(heartbeat.gpu_type, heartbeat.at)
    except (NotFound, ValueError) as exc:
        return str(exc)
