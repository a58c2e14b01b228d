"""``LedgerWorker``: heartbeats in; metered usage, alerts and stops out; one commit per user per batch.

For each batch the subscriber hands over (``handle``):

0. Signatures (``storage.heartbeats.heartbeat``): each heartbeat's attempt secret is derived
   again from the platform's ``heartbeat_key`` and the heartbeat's user, job and attempt; an
   unsigned heartbeat, or one whose signature does not match its fields, is dropped before
   anything else, counted (``stats.unsigned``, ``stats.forged``) and logged once per job per
   batch (the job and the counts; never a secret or a signature). Dropped heartbeats are never
   billed and never make a job look alive.
1. Prices: one ``PriceSchedule`` (``PlatformApp.price_list`` at the batch's earliest
   heartbeat) gives the price in force at each heartbeat's ``at``, for the GPU type its
   attempt was placed on.
1b. Placement and lease: an attempt is billed as its ``Job.Started`` placed it
   (``Job.attempts[str(attempt)]``; the job's submitted type and count when that ``Started``
   recorded none), never by a heartbeat's claim. A heartbeat whose ``gpu_type``/``gpu_count``
   contradict its attempt's placement, or whose ``lease`` is not the lease its attempt's
   ``Started`` recorded (a superseded runner, a second runner of one attempt), is not billed:
   it is counted (``stats.contradicting``, ``stats.superseded``) and recorded as a
   ``Job.HeartbeatsRejected`` (one per job, attempt and reason per batch) in the commit of the
   batch's usage, so ``tune admin audit`` shows it. The heartbeats of the attempt that agree
   with it are billed as usual. (A batch delivered again records its rejections again: they
   are evidence, never money.)
2. Per user, per job: load the Job, drop what it has metered already (``Job.metered_seq``,
   rebuilt from events, so dedupe survives a restart) and repeats, meter each fresh heartbeat's
   increase of its attempt's cumulative total (``domain.cumulative``: ``Job.meters``), group them
   into usage runs (``runners.ledger.usage_runs``) and record one ``UsageMetered`` per run.
   Archive: the signed heartbeats of the batch of every job attempt metered in the user's commit
   (those that agree with their attempt's placement and lease) are written, before the commit, as
   one create-only object (``storage.heartbeats.archive``), whose name and sha256 every
   ``UsageMetered`` event of the commit records (``tune admin audit`` recomputes the usage from
   it). One object per user per batch, not one per job attempt: over Pub/Sub a batch holds ~360
   heartbeats of ~170-200 attempts (``bench/bench_ledger.py``: 200 jobs of 20 users). An object
   per attempt, 8 created at once, made signatures + archive cost +95-160 us of CPU per heartbeat;
   one per user (~20 a batch), +27-40 us; 32 creates at once still took 3.7x the wall time of the
   per-user objects (a busy 2-core machine, folder bucket).
3. Limits (``runners.ledger.limits``): the user's net spend per period comes from the same
   fold as billing.json (``runners.ledger.spend``); alerts at the thresholds of each job's
   ``max_cost`` and of the monthly budget, and a ``budget_exceeded`` stop request where the
   next interval plus the measured stop latency (the longest of the last few: from a limit's
   stop request to the attempt's final heartbeat) would pass a limit. The limits are hard
   caps: ``UserApp.meter_usage`` credits (``limit``) whatever usage would pass ``max_cost`` or
   the budget (this plan's ``period_spend`` gives the spend of the user's other jobs), so net
   charged <= limit always; the early stop keeps such credits small.
4. Steps 2 and 3 are one ``UserApp.meter_usage`` per user: it loads the jobs and the budget
   (the worker's ``AggregateCache`` copies), asks this worker's plan (``_UserBatch``) what
   to record, and saves every job and the budget it changed in one commit; a lost race
   (Conflict ``version_conflict``: e.g. the runner reported progress on the same job) is
   redone from fresh reads. Then the projector is told (``notify("users/<uid>")``).
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

``start()`` runs the subscriber and a thread calling ``sweep()`` (the lost-job detector, and the
spools of unsent heartbeats of attempts that went quiet: ``runners.ledger.spools``) every
``sweep_interval_s``; ``close()`` stops both. ``recover()`` (after a restart, before ``start``)
watches the jobs left running and meters every spool in the bucket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import msgspec

from domain.aggregate_cache import AggregateCache
from domain.budget import DEFAULT_THRESHOLDS_PCT
from domain.cumulative import AttemptMeter
from domain.errors import Conflict, NotFound, PlatformError
from domain.ids import check_id
from domain.job import HEARTBEAT_CONTRADICTS_PLACEMENT, HEARTBEAT_LEASE_SUPERSEDED, Job
from domain.job_states import LIMIT_STOPPABLE_STATES
from domain.metering import (
    JOB_SCOPE,
    JobPolicy,
    LimitOrders,
    MeteredJob,
    MeteringResult,
    PriceSchedule,
    RejectedHeartbeats,
    UsageRun,
    job_policy,
    marginal_cost_usd_micros,
)
from domain.money import UsageGroupKey, period_of
from domain.read_models import BudgetView
from projections.billing import BillingState
from runners.ledger.limits import STOP_REASON, BudgetOutlook, JobOutlook, plan_limits
from runners.ledger.live import LiveJob, LiveJobs
from runners.ledger.lost import LOST_AFTER_INTERVALS, LostJob, LostJobDetector, OnRetry, watch_running_jobs
from runners.ledger.spend import UserSpend
from runners.ledger.spools import SpoolWatch, all_spools, read_spool
from runners.ledger.usage_runs import (
    CLOCK_BOUND,
    GPU_TOLERANCE,
    ClockBounds,
    bound_clocks,
    by_user_and_job,
    clamp_times,
    fresh_heartbeats,
    usage_runs,
)
from storage import Bucket, layout
from storage.bucket import AlreadyExists
from storage.clock import Clock, utc_now
from storage.eventstore import pinned_reads
from storage.eventstore.log import io_workers_for
from storage.heartbeats import (
    Archive,
    ArchivedAttempt,
    ArchiveHeader,
    Heartbeat,
    HeartbeatSubscriber,
    attempt_secret,
    encode_archive,
    verify_heartbeat,
)

__all__ = ["LedgerStats", "LedgerWorker", "Notifier"]

log = logging.getLogger(__name__)

_TRIES = 10
_LINGER_FRACTION = 50  # linger only after a batch of at most max_batch / 50 heartbeats
_SECRETS_KEPT = 100_000  # derived attempt secrets cached (one HMAC saved per heartbeat)
_STOP_LATENCIES_KEPT = 20  # the stop latency allowed for is the longest of the last these many
_STOP_LATENCY_MAX_MS = 600_000  # one runner that took longer is not allowed for beyond this


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
    contradicting: int = 0
    """Heartbeats rejected (and recorded) for claiming other hardware than their attempt's placement."""
    superseded: int = 0
    """Heartbeats rejected (and recorded) for a lease that is not their attempt's."""
    unsigned: int = 0
    """Heartbeats dropped unbilled for carrying no signature."""
    forged: int = 0
    """Heartbeats dropped unbilled for a signature that does not match their fields and attempt."""
    clock_clamped: int = 0
    """Heartbeats metered at the ledger's receive time: their ``at`` was past the clock bound."""
    gpu_clamped: int = 0
    """Heartbeats whose cumulative GPU time was cut to the wall time the ledger saw their attempt run."""
    archives: int = 0
    """Raw heartbeat archive objects written (one per user per batch)."""
    events: int = 0
    commits: int = 0
    conflicts: int = 0
    """Saves redone after another writer got there first."""
    alerts: int = 0
    stops: int = 0
    lost: int = 0
    last_commit: dict[str, int] = field(default_factory=dict)
    """The last notification id the ledger wrote, per partition (``users/<uid>``)."""

    def add(self, share: LedgerStats) -> None:
        """Count in what metering one user's share of a batch did (``_UserOutcome.counts``)."""
        self.metered += share.metered
        self.duplicates += share.duplicates
        self.rejected += share.rejected
        self.contradicting += share.contradicting
        self.superseded += share.superseded
        self.clock_clamped += share.clock_clamped
        self.gpu_clamped += share.gpu_clamped
        self.archives += share.archives
        self.alerts += share.alerts
        self.stops += share.stops
        self.conflicts += share.conflicts
        self.events += share.events  # none unless it saved (a commit)


@dataclass
class _UserOutcome:
    """What metering one user's share of a batch did (applied to the stats once it is saved)."""

    counts: LedgerStats = field(default_factory=LedgerStats)
    position: int | None = None
    live: list[LiveJob] = field(default_factory=list)
    at: datetime | None = None
    stops_asked: list[str] = field(default_factory=list)
    """Jobs this share asked to stop for a limit."""
    finals: dict[str, datetime] = field(default_factory=dict)
    """Jobs whose current attempt sent its final heartbeat in this share, and when."""


class _PendingArchive(NamedTuple):
    name: str
    archive: Archive

    @property
    def sha256(self) -> str:
        return self.archive.sha256


@dataclass
class _Metered:
    """One job's part of the batch: its last priced heartbeat (and the GPU ms it added), then (once
    metered) the job."""

    last: Heartbeat
    price: int
    gpu_ms: int = 0
    job: MeteredJob | None = None
    next_usd_micros: int = 0
    interval_ms: int = 0


class LedgerWorker:
    """Meters heartbeats from ``subscriber`` into each user's event log.

    Args:
        bucket: the bucket the event store lives in (``recover`` reads its views).
        platform_app: the ``PlatformApp`` (prices).
        heartbeat_key: the platform's heartbeat key (``runtime.settings.heartbeat_key_of``): only
            heartbeats signed with their attempt's secret derived from it are metered.
        open_user_app: the ``UserApp`` of a user id (one per user: the caller caches them).
        subscriber: where heartbeats come from (not started yet).
        projector: told which partitions the ledger wrote (None: nothing in-process to tell).
        clock: the ledger's time (event ``at``, liveness).
        flush_interval_s: how long a trickle of heartbeats is gathered before it is committed.
        sweep_interval_s: how often ``start()``'s thread runs the lost-job sweep.
        lost_after_intervals: heartbeat intervals of silence before a job is lost.
        on_retry: called with ``(user_id, job_id)`` when a lost job is set to retry.
        clock_bound: how far a heartbeat's ``at`` may be from the ledger's receive time; beyond it
            the heartbeat is metered at the receive time (``runners.ledger.usage_runs.bound_clocks``).
        gpu_tolerance: GPU time an attempt may claim beyond the wall time the ledger saw it run.
        parallel: users metered at once (their commits are independent I/O; 1: one by one); None:
            as many as the bucket's I/O is worth (``io_workers_for``: one for a folder, several remote).
        archive_heartbeats: write the raw heartbeat archive (False: none is written or recorded, and
            the audit counts the usage as not archived; ``bench/bench_ledger.py`` measures its cost so).
    """

    def __init__(
        self,
        bucket: Bucket,
        platform_app: Any,
        open_user_app: Callable[[str], Any],
        subscriber: HeartbeatSubscriber,
        projector: Notifier | None = None,
        *,
        heartbeat_key: bytes,
        clock: Clock = utc_now,
        flush_interval_s: float = 0.2,
        sweep_interval_s: float = 1.0,
        lost_after_intervals: int = LOST_AFTER_INTERVALS,
        on_retry: OnRetry | None = None,
        parallel: int | None = None,
        clock_bound: timedelta = CLOCK_BOUND,
        gpu_tolerance: timedelta = GPU_TOLERANCE,
        archive_heartbeats: bool = True,
    ) -> None:
        self.bucket = bucket
        self.archive_heartbeats = archive_heartbeats
        self.platform_app = platform_app
        self.open_user_app = open_user_app
        self.subscriber = subscriber
        self.projector = projector
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.intervals = lost_after_intervals
        self.stats = LedgerStats()
        self._heartbeat_key = heartbeat_key
        self._secrets: dict[tuple[str, str, int], str] = {}
        self.live = LiveJobs()
        self.lost = LostJobDetector(
            open_user_app, self.live, intervals=lost_after_intervals, notify=self._notify, on_retry=on_retry
        )
        self.spools = SpoolWatch()
        self._spend: dict[str, UserSpend] = {}
        self._aggregates = AggregateCache()
        self._policies: dict[tuple[str, str], JobPolicy] = {}
        self.bounds = ClockBounds(clock_bound, gpu_tolerance)
        self._stops_asked: dict[tuple[str, str], datetime] = {}  # (user, job) -> when a limit stop was asked
        self._stop_latencies: deque[int] = deque(maxlen=_STOP_LATENCIES_KEPT)
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
        """After a restart: meter every spool of unsent heartbeats, then watch every job the views
        show running (see ``watch_running_jobs``): a runner still heartbeating is adopted, one that
        stays quiet is found lost, once the heartbeats the dead ledger had received and not acked
        can have come again (``HeartbeatSubscriber.held_back_s``). Returns how many jobs are watched."""
        spools = list(all_spools(self.bucket))
        for name in spools:
            self.meter_spool(name)
        if spools:
            log.info("ledger: %d spool(s) of unsent heartbeats metered", len(spools))
        grace = timedelta(seconds=self.subscriber.held_back_s)
        return watch_running_jobs(self.lost, self.bucket, self.clock(), grace=grace)

    def meter_spool(self, name: str) -> int:
        """Meter the heartbeats of spool ``name`` (repeats dropped as always); return how many it holds."""
        heartbeats = read_spool(self.bucket, name)
        for first in range(0, len(heartbeats), 500):
            self.handle(heartbeats[first : first + 500])
        return len(heartbeats)

    def sweep(self) -> list[LostJob]:
        """Meter the spools found of attempts that went quiet, then run the lost-job detector once."""
        now = self.clock()
        for entry in self.live.quiet(now, self.intervals):
            if not entry.final:  # it may be an orphan ending: its undelivered heartbeats may come
                self.spools.expect(entry.user_id, entry.job_id, entry.attempt, now)
        for expected in self.spools.due(now):
            if self.bucket.exists(expected.name):
                self.meter_spool(expected.name)
                self.spools.found(expected)
        lost = self.lost.sweep(now)
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
        size = len(batch)
        batch = self._authentic(batch)
        prices = self._price_schedule(batch, received)
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
        self.stats.heartbeats += size
        self._linger(began, size)

    def _authentic(self, batch: list[Heartbeat]) -> list[Heartbeat]:
        """The heartbeats of ``batch`` signed by their attempt; the others are counted and logged."""
        kept: list[Heartbeat] = []
        dropped: dict[str, list[int]] = {}  # job_id -> [unsigned, forged]
        for heartbeat in batch:
            if heartbeat.signature is not None and verify_heartbeat(heartbeat, self._secret_of(heartbeat)):
                kept.append(heartbeat)
                continue
            counts = dropped.setdefault(heartbeat.job_id, [0, 0])
            counts[heartbeat.signature is not None] += 1
        for job_id, (unsigned, forged) in dropped.items():
            self.stats.unsigned += unsigned
            self.stats.forged += forged
            log.error(
                "ledger: job %.80r: %d unsigned and %d forged heartbeat(s) dropped, unbilled",
                job_id,
                unsigned,
                forged,
            )
        return kept

    def _secret_of(self, heartbeat: Heartbeat) -> str:
        key = (heartbeat.user_id, heartbeat.job_id, heartbeat.attempt)
        secret = self._secrets.get(key)
        if secret is None:
            if len(self._secrets) >= _SECRETS_KEPT:
                self._secrets.clear()
            secret = self._secrets[key] = attempt_secret(self._heartbeat_key, *key)
        return secret

    def _price_schedule(self, batch: Sequence[Heartbeat], received: datetime) -> PriceSchedule | None:
        if not batch:
            return None
        bound = self.bounds.clock_bound
        # from the earliest time a heartbeat can be metered at (a clamped one: ``received``)
        earliest = min([received, *(h.at for h in batch if received - bound <= h.at <= received + bound)])
        try:
            return PriceSchedule(self.platform_app.price_list(earliest))
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
            return _UserOutcome(LedgerStats(rejected=count))
        spend = self._spend.setdefault(user_id, UserSpend())
        conflicts = 0
        written: set[str] = set()
        while True:
            plan = _UserBatch(self, app, user_id, jobs, prices, received, spend, written)
            try:
                with pinned_reads(app):  # one look for newer commits, not one per aggregate read
                    result = app.meter_usage(list(jobs), plan, received, copies=self._aggregates)
            except Conflict as exc:
                if exc.code != "version_conflict":
                    raise
                conflicts += 1
                if conflicts == _TRIES:
                    raise
                time.sleep(0.002 * conflicts)
            else:
                outcome = plan.settled(result)
                outcome.counts.conflicts = conflicts
                return outcome

    def _settle(self, user_id: str, outcome: _UserOutcome) -> None:
        stats = self.stats
        stats.add(outcome.counts)
        for entry in outcome.live:
            self.live.record(entry)
        if outcome.position is not None:
            for job_id, final_at in outcome.finals.items():
                asked = self._stops_asked.pop((user_id, job_id), None)
                if asked is not None:
                    ms = (final_at - asked) // timedelta(milliseconds=1)
                    self._stop_latencies.append(min(max(ms, 0), _STOP_LATENCY_MAX_MS))
            if len(self._stops_asked) > 100_000:
                self._stops_asked.clear()
            for job_id in outcome.stops_asked:
                self._stops_asked.setdefault((user_id, job_id), outcome.at)  # type: ignore[arg-type]
            partition = layout.user_partition(user_id)
            stats.commits += 1
            stats.last_commit[partition] = outcome.position
            self._notify(partition)

    def _notify(self, partition: str) -> None:
        if self.projector is not None:
            self.projector.notify(partition)

    @property
    def stop_latency_ms(self) -> int:
        """How long a stop asked for a limit has lately taken to end its attempt (the longest of the
        last few, from the request to the attempt's final heartbeat): allowed for when stopping early."""
        return max(self._stop_latencies, default=0)

    # ---- what the plans share ----

    def _policy(self, user_id: str, job: MeteredJob) -> JobPolicy:
        """The job's interval and retries (its config never changes: parsed once)."""
        policy = self._policies.get((user_id, job.job_id))
        if policy is None:
            if len(self._policies) > 100_000:
                self._policies.clear()
            policy = self._policies[(user_id, job.job_id)] = job_policy(job.config)
        return policy

    def _outlook(self, part: _Metered, policy: JobPolicy, prices: PriceSchedule | None) -> None:
        """Set what the job's next heartbeat interval is and, with the time a stop takes, will cost."""
        last, job = part.last, part.job
        assert job is not None
        part.interval_ms = max(policy.heartbeat_interval_ms, part.gpu_ms)
        if last.final and last.attempt == job.attempt:
            return  # its attempt has ended; a next one starts over from its first heartbeat
        then = last.at + timedelta(milliseconds=part.interval_ms)
        price = part.price
        if prices is not None:
            with contextlib.suppress(NotFound):
                price = prices.price_at(last.gpu_type, then)
        key = UsageGroupKey(period_of(then), job.job_id, last.gpu_type, last.gpu_count, price)
        ahead_ms = part.interval_ms + self.stop_latency_ms
        part.next_usd_micros = marginal_cost_usd_micros(job.usage, key, ahead_ms, job.credited)


class _UserBatch:
    """One user's share of a batch, one try: the plan ``UserApp.meter_usage`` asks while it holds
    the user's jobs and budget (``domain.metering.UsagePlan``)."""

    def __init__(
        self,
        worker: LedgerWorker,
        app: Any,
        user_id: str,
        jobs: dict[str, list[Heartbeat]],
        prices: PriceSchedule | None,
        at: datetime,
        spend: UserSpend,
        written: set[str],
    ) -> None:
        """``written``: archives created by an earlier try of the same share (not created again)."""
        self.worker, self.app, self.user_id, self.jobs = worker, app, user_id, jobs
        self.prices, self.at, self.spend = prices, at, spend
        self.outcome = _UserOutcome(at=at)
        self.archived: list[tuple[ArchivedAttempt, list[Heartbeat]]] = []
        self.archive: _PendingArchive | None = None
        self.worker_written: set[str] = written
        self.parts: dict[str, _Metered] = {}
        self.rejections: dict[str, list[RejectedHeartbeats]] = {}
        self.spent: BillingState | None = None
        self._refreshed = False

    def _refresh(self) -> None:
        if not self._refreshed:
            self.spend.refresh(self.app)
            self._refreshed = True

    def period_spend(self, period: str, *, exclude: Collection[str]) -> int | None:
        """The user's net spend in ``period`` on the jobs not in ``exclude``, as saved (the fold
        billing.json uses)."""
        self._refresh()
        return UserSpend.period_total_but(self.spend.state, period, exclude)

    def usage_runs(
        self,
        job_id: str,
        attempt: int,
        metered_seq: Mapping[str, int],
        *,
        gpu_count: int = 1,
        gpu_type: str = "",
        attempts: Mapping[str, Mapping[str, Any]] | None = None,
        meters: Mapping[int, AttemptMeter] | None = None,
    ) -> list[UsageRun]:
        """The job's heartbeats that agree with their attempt's placement and lease, not metered
        yet, their times bounded by the ledger's clock, priced by the placement, each metered as
        the increase of its attempt's cumulative total, in runs (named with the archive by
        ``archive_runs``; the refused are logged and counted; the rejected kept for
        ``rejected_heartbeats``)."""
        counts, bounds = self.outcome.counts, self.worker.bounds
        placements = _Placements(attempts or {}, gpu_type, gpu_count)
        placed, rejected = placements.split(job_id, attempt, self.jobs[job_id])
        self.rejections[job_id] = rejected
        for rejection in rejected:
            if rejection.reason == HEARTBEAT_LEASE_SUPERSEDED:
                counts.superseded += rejection.count
            else:
                counts.contradicting += rejection.count
            log.error(
                "ledger: job %.80r attempt %d: %d heartbeat(s) (seq %d-%d) rejected, unbilled: %s",
                job_id,
                rejection.attempt,
                rejection.count,
                rejection.first_seq,
                rejection.last_seq,
                rejection.reason,
            )
        fresh = fresh_heartbeats(placed, metered_seq)
        counts.duplicates += fresh.dropped
        clamped, clock_clamped = clamp_times(fresh.heartbeats, self.at, bounds.clock_bound)
        priced: list[tuple[Heartbeat, int]] = []
        refused: dict[int, list[int]] = {}
        for heartbeat in clamped:
            price = _price_or_reason(job_id, attempt, heartbeat, self.prices, placements.gpu_type(heartbeat))
            if isinstance(price, str):
                counts.rejected += 1
                refused.setdefault(heartbeat.attempt, []).append(heartbeat.seq)
                log.error("ledger: heartbeat %s dropped, unbilled: %s", heartbeat.key, price)
            else:
                priced.append((heartbeat, price))
        if not priced:
            return []
        meters = {
            a: dataclasses.replace(m) for a, m in (meters or {}).items()
        }  # the job's own stay as they are
        placed_count = placements.of(attempt)[1]
        bounded = bound_clocks(priced, placed_count, meters, bounds)
        self._log_clocks(job_id, clock_clamped, bounded.gpu_clamped)
        for a in dict.fromkeys(h.attempt for h, _ in priced):
            entry = ArchivedAttempt(
                job_id=job_id, attempt=a, bound_count=placed_count, refused=refused.get(a, [])
            )
            self.archived.append((entry, [h for h in placed if h.attempt == a]))
        last = bounded.increases[-1]
        self.parts[job_id] = _Metered(last.heartbeat, last.price, last.gpu_ms)
        runs = usage_runs(bounded.increases, meters)
        counts.metered += sum(run.heartbeats for run in runs)
        return runs

    def rejected_heartbeats(self, job_id: str) -> list[RejectedHeartbeats]:
        """What ``usage_runs`` rejected of the job (to record as ``Job.HeartbeatsRejected``)."""
        return self.rejections.get(job_id, [])

    def _log_clocks(self, job_id: str, clock_clamped: int, gpu_clamped: int) -> None:
        counts = self.outcome.counts
        counts.clock_clamped += clock_clamped
        counts.gpu_clamped += gpu_clamped
        if clock_clamped or gpu_clamped:
            log.warning(
                "ledger: job %.80r: %d heartbeat(s) dated more than %s from the ledger's clock metered at"
                " %s; %d heartbeat(s) claimed more GPU time than the wall time seen, cut",
                job_id,
                clock_clamped,
                self.worker.bounds.clock_bound,
                self.at.isoformat(),
                gpu_clamped,
            )

    def archive_runs(self, runs: Mapping[str, Sequence[UsageRun]]) -> Mapping[str, Sequence[UsageRun]]:
        """``runs``, each naming the archive of every attempt ``usage_runs`` metered (``before_commit``
        writes it)."""
        if not self.archived or not self.worker.archive_heartbeats:
            return runs
        bounds = self.worker.bounds
        header = ArchiveHeader(
            received=self.at,
            clock_bound_ms=bounds.clock_bound // timedelta(milliseconds=1),
            gpu_tolerance_ms=bounds.gpu_tolerance // timedelta(milliseconds=1),
            attempts=[entry for entry, _ in self.archived],
        )
        archive = encode_archive(header, [h for _, beats in self.archived for h in beats])
        name = layout.heartbeat_batch(self.user_id, self.at, archive.sha256)
        self.archive = _PendingArchive(name, archive)
        named = {"archive": name, "archive_sha256": archive.sha256}
        return {job_id: [msgspec.structs.replace(run, **named) for run in rs] for job_id, rs in runs.items()}

    def before_commit(self) -> None:
        """Create the archive the runs name; an object already there with the same bytes (this
        batch, tried again) is fine."""
        pending = self.archive
        if pending is None or pending.name in self.worker_written:
            return
        bucket = self.worker.bucket
        try:
            bucket.create(pending.name, pending.archive.data)
        except AlreadyExists:
            if hashlib.sha256(bucket.read(pending.name)).hexdigest() != pending.archive.sha256:
                raise
        else:
            self.outcome.counts.archives += 1
        self.worker_written.add(pending.name)

    def limit_orders(self, jobs: Sequence[MeteredJob], budget: BudgetView | None) -> LimitOrders:
        """The alerts and stops due after the batch (``runners.ledger.limits``)."""
        worker, user_id, at, prices = self.worker, self.user_id, self.at, self.prices
        metered: dict[str, _Metered] = {}
        for job in jobs:
            part = metered[job.job_id] = self.parts[job.job_id]
            part.job = job
        self._refresh()
        spent = self.spent = self.spend.after([e for job in jobs for e in job.events])
        for part in metered.values():
            assert part.job is not None
            worker._outlook(part, worker._policy(user_id, part.job), prices)
        others = [e for e in worker.live.running(user_id, at, worker.intervals) if e.job_id not in metered]
        thresholds = budget.thresholds_pct if budget is not None else list(DEFAULT_THRESHOLDS_PCT)
        outlooks = [_job_outlook(job_id, part) for job_id, part in metered.items()]
        actions = plan_limits(outlooks, _budget_outlook(metered, budget, spent, others), thresholds)
        stop = sorted(set(actions.stop_jobs))
        if actions.stop_all_live:
            stop = [*metered, *(entry.job_id for entry in others)]
        self.outcome.live = [_live_entry(user_id, job_id, part, at) for job_id, part in metered.items()]
        self.outcome.finals = {
            job_id: part.last.at
            for job_id, part in metered.items()
            if part.last.final and part.job is not None and part.last.attempt == part.job.attempt
        }
        self.outcome.stops_asked = [
            job_id for job_id in stop if job_id not in self.outcome.finals and _stoppable(metered.get(job_id))
        ]
        return LimitOrders(
            job_alerts=actions.job_alerts,
            budget_alerts=actions.budget_alerts,
            stop_job_ids=stop,
            stop_reason=STOP_REASON,
            stop_states=LIMIT_STOPPABLE_STATES,
        )

    def settled(self, result: MeteringResult) -> _UserOutcome:
        """The outcome once ``UserApp.meter_usage`` returned ``result``; the spend moves past its commit."""
        outcome = self.outcome
        counts = outcome.counts
        for job_id in result.unknown_job_ids:
            count = len(self.jobs[job_id])
            counts.rejected += count
            log.error("ledger: %d heartbeat(s) of unknown job %.80r dropped", count, job_id)
        for run, reason in result.refused:
            counts.metered -= run.heartbeats
            counts.rejected += run.heartbeats
            log.error(
                "ledger: %d heartbeat(s) of %s dropped, unbilled: %s", run.heartbeats, run.job_id, reason
            )
        counts.alerts, counts.stops, counts.events = result.alerts, result.stops, result.events
        outcome.position = result.last_position
        if self.spent is not None:
            self.spend.advance(result.first_position, result.last_position, self.spent)
        return outcome


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


def _stoppable(part: _Metered | None) -> bool:
    """Whether a limit's stop request reaches the job (one not metered now: as far as is known)."""
    return part is None or part.job is None or part.job.state in LIMIT_STOPPABLE_STATES


def _next_period(part: _Metered) -> str:
    return period_of(part.last.at + timedelta(milliseconds=part.interval_ms))


def _job_outlook(job_id: str, part: _Metered) -> JobOutlook:
    job = part.job
    assert job is not None
    return JobOutlook(
        job_id=job_id,
        spent_usd_micros=job.cost_usd_micros,
        next_usd_micros=part.next_usd_micros,
        max_cost_usd_micros=job.max_cost_usd_micros,
        alerted_pct=frozenset(int(a.partition(":")[2]) for a in job.alerts if a.startswith(f"{JOB_SCOPE}:")),
        stoppable=job.state in LIMIT_STOPPABLE_STATES,
    )


def _budget_outlook(
    metered: dict[str, _Metered], budget: BudgetView | None, state: BillingState, others: list[LiveJob]
) -> BudgetOutlook:
    """The user's spend per period with this batch's usage (``state``: the fold billing.json uses),
    and the next interval of every live job of the user."""
    next_period = max(_next_period(part) for part in metered.values())
    pending = [e for part in metered.values() if part.job is not None for e in part.job.events]
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


class _Placements:
    """What each attempt of one job was placed on and fenced by, as its ``Started`` recorded it
    (``Job.attempts``); an attempt with no recorded placement (a v1 ``Started``, or an attempt
    started before a snapshot that knew none) runs on the submitted type and count, lease None."""

    def __init__(self, attempts: Mapping[str, Mapping[str, Any]], gpu_type: str, gpu_count: int) -> None:
        self.attempts, self.submitted = attempts, (gpu_type, gpu_count)

    def of(self, attempt: int) -> tuple[str, int, str | None]:
        """``(gpu_type, gpu_count, lease)`` of ``attempt``."""
        record = self.attempts.get(str(attempt)) or {}
        if record.get("gpu_type") is None:
            return (*self.submitted, record.get("lease"))
        return record["gpu_type"], record["gpu_count"], record.get("lease")

    def gpu_type(self, heartbeat: Heartbeat) -> str:
        return self.of(heartbeat.attempt)[0]

    def split(
        self, job_id: str, last_attempt: int, heartbeats: Sequence[Heartbeat]
    ) -> tuple[list[Heartbeat], list[RejectedHeartbeats]]:
        """The heartbeats that agree with their attempt's lease and placement, and the others in one
        ``RejectedHeartbeats`` per attempt and reason (a lease mismatch is the reason when both are
        wrong; repeats of one heartbeat count once). Heartbeats of attempts that never started are
        kept: ``_price_or_reason`` refuses them."""
        kept: list[Heartbeat] = []
        rejected: dict[tuple[int, str], dict[Heartbeat, None]] = {}
        for heartbeat in heartbeats:
            if not 1 <= heartbeat.attempt <= last_attempt:
                kept.append(heartbeat)
                continue
            gpu_type, gpu_count, lease = self.of(heartbeat.attempt)
            if heartbeat.lease != lease:
                reason = HEARTBEAT_LEASE_SUPERSEDED
            elif heartbeat.gpu_type != gpu_type or heartbeat.gpu_count != gpu_count:
                reason = HEARTBEAT_CONTRADICTS_PLACEMENT
            else:
                kept.append(heartbeat)
                continue
            rejected.setdefault((heartbeat.attempt, reason), {})[heartbeat] = None
        return kept, [
            RejectedHeartbeats(
                job_id=job_id,
                attempt=attempt,
                first_seq=min(h.seq for h in group),
                last_seq=max(h.seq for h in group),
                count=len(group),
                reason=reason,
            )
            for (attempt, reason), group in sorted(rejected.items())
        ]


def _price_or_reason(
    job_id: str, attempt: int, heartbeat: Heartbeat, prices: PriceSchedule | None, gpu_type: str
) -> str | int:
    """The price in force for ``heartbeat`` on ``gpu_type`` (its attempt's placement, never its own
    claim), or why it cannot be billed (``attempt``: the job's last)."""
    if not 1 <= heartbeat.attempt <= attempt:
        return f"attempt {heartbeat.attempt} of job {job_id} never started (last: {attempt})"
    if prices is None:
        return "no prices are set"
    try:
        return prices.price_at(gpu_type, heartbeat.at)
    except (NotFound, ValueError) as exc:
        return str(exc)
