"""The fine-tuning job: its state machine, attempts, progress, checkpoints and metered GPU time.

The states, the table of allowed transitions (with its diagram) and the named sets of states
live in ``domain.job_states`` (re-exported here). ``Job`` moves only along ``TRANSITIONS``;
anything else raises ``Conflict`` naming the job, its state and what was asked, and records
nothing. Attempts count from 1.

Fencing: each attempt's ``Started`` records its lease (a random token the dispatcher gives the
attempt's runner). A runner's report (progress, activity, checkpoint, stopped, succeeded with its
model, failed, retry) names its attempt and carries its lease; one whose attempt is not the
current one, or whose lease is not the current attempt's, is refused with ``Conflict`` (code
``superseded``), so a runner left over from an earlier attempt, or a second runner launched for
the same attempt, cannot move the job. The current attempt has no lease once ``Retrying``
announced the next one. The control plane's own commands (the dispatcher, the ledger: lost,
stop, fail, retry, given no lease) are not fenced. ``HeartbeatsRejected`` records heartbeats the
ledger refused to bill (their claim contradicts the placement, or their lease is not their
attempt's); it changes nothing else. Usage is metered in batches
of heartbeats ``first_seq..last_seq`` per attempt; a batch that does not start after the last
metered seq of its attempt is refused, so a redelivered batch is never billed twice. Usage is
accepted in any state once the attempt has started (the last batch may arrive after the end).

Credits (``UsageCredited``, per usage group: ``domain.money`` prices charged, credited and net):

- Platform faults (``PLATFORM_FAULTS``): an attempt that ended for the platform's reasons
  (``mark_lost``; ``retry``/``mark_failed`` given ``fault=``; ``credit_platform_fault``) is
  credited the GPU time it spent after its last checkpoint of its own: its metered ms less
  ``CheckpointSaved.gpu_ms_total`` (no checkpoint of its own: all of it; a v1 checkpoint without
  ``gpu_ms_total``: nothing, as before), spread over its usage groups latest first
  (``AttemptFaulted`` records the reason and the checkpoint's ms once per attempt). Usage of that
  attempt metered later (late heartbeats) is credited in the same ``meter_usage``.
- Hard caps (reason ``limit``): ``meter_usage`` credits the part of each run that would take the
  job's net cost past its ``max_cost``, or its net cost in the run's period past ``period_room``
  (what the monthly budget leaves it), keeping the most milliseconds that fit
  (``domain.money.max_ms_within``): net <= limit always.

A group (and an attempt's part of it) is never credited more milliseconds than it was charged.

Pause and resume (``request_pause``, ``mark_paused``, ``resume``): a running job asked to pause is
``pausing`` (``PauseRequested``): its runner has the trainer save a checkpoint and exit, then records
``Paused`` (its lease; the control plane records it without one when the runner died meanwhile: then
``Lost`` first, credited as any lost attempt). A job with nothing running (``PAUSE_AT_ONCE_STATES``)
is ``Paused`` at once. A paused job runs nothing, holds no hardware and sends no heartbeats, so
nothing is metered while it is paused; its time up to the pause is charged as usual (the pause is
the user's, not a platform fault). ``pausing`` still ends ``succeeded`` or ``failed`` if the trainer
finishes first, and a stop request turns it into ``stopping``. ``resume`` queues a paused job again
(``Resumed``): the dispatcher launches its next attempt (``next_attempt``) from the job's last
checkpoint, as a retry does (none yet: from the start). A job paused while ``retrying`` resumes with
the attempt already announced; otherwise a resume begins a new attempt, counted in
``resumed_attempts``: those are not retries, so they do not use up ``max_retries``
(``retries_used``). Pausing or resuming a job that cannot (ended, already paused or pausing, not
paused) raises ``Conflict`` and records nothing.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count, check_text, check_utc
from domain.cumulative import AttemptMeter
from domain.errors import Conflict, ValidationFailed
from domain.ids import check_id, check_ids
from domain.job_states import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    PAUSE_AT_ONCE_STATES,
    REPORTING_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    JobState,
)
from domain.money import (
    JobCostSummary,
    UsageGroupKey,
    add_usage,
    check_period,
    group_costs,
    max_ms_within,
    summarize_job_cost,
)
from domain.placement import Placement
from domain.pricing import check_gpu_type

__all__ = [
    "ACTIVE_STATES",
    "HEARTBEAT_CONTRADICTS_PLACEMENT",
    "HEARTBEAT_LEASE_SUPERSEDED",
    "LIMIT_CREDIT",
    "PLATFORM_FAULTS",
    "START_KINDS",
    "SUPERSEDED",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Job",
    "JobFields",
    "JobState",
    "next_attempt",
    "retries_used",
]

SUPERSEDED = "superseded"
"""``Conflict.code`` of a runner's report refused because its attempt or lease is not the current one."""
HEARTBEAT_CONTRADICTS_PLACEMENT = "contradicts_placement"
"""``HeartbeatsRejected.reason``: their GPU type or count is not what their attempt was placed on."""
HEARTBEAT_LEASE_SUPERSEDED = "lease_superseded"
"""``HeartbeatsRejected.reason``: their lease is not the one their attempt's ``Started`` recorded."""
HEARTBEAT_REJECTION_REASONS = frozenset({HEARTBEAT_CONTRADICTS_PLACEMENT, HEARTBEAT_LEASE_SUPERSEDED})


S = JobState
_SHA256 = re.compile(r"[0-9a-f]{64}")

PLATFORM_FAULTS = frozenset({"lost", "control_plane", "preempted", "superseded", "shutdown"})
"""Why an attempt may end for the platform's reasons, each credited (``Job.credit_platform_fault``):
its runner went silent (``lost``), its control plane crashed (``control_plane``), its machine was
taken back (``preempted``), another attempt replaced it (``superseded``), the platform shut down
(``shutdown``)."""
LIMIT_CREDIT = "limit"
"""The reason of usage credited for passing ``max_cost`` or the monthly budget."""


class JobFields:
    """What a ``Job`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    job_id: str
    user_id: str
    base_model: str
    dataset_id: str
    model_id: str
    config: dict[str, Any]
    gpu_type: str
    gpu_count: int
    max_cost_usd_micros: int | None
    estimate_usd_micros: int | None
    state: JobState
    attempt: int
    step: int
    progress_attempt: int
    total_steps: int | None
    epoch: float | None
    loss: float | None
    tokens: int
    checkpoint: dict[str, Any] | None
    start_from: dict[str, Any] | None
    """Where training starts while the job has no checkpoint of its own (``Submitted``): ``{"kind":
    "checkpoint" | "model", "id": <checkpoint id or model id>, "path": <its folder in the bucket>}``;
    None: from the base model."""
    lease: str | None
    """The fencing lease of the current attempt (``Started``); None before it, or for a v1 ``Started``."""
    placement: dict[str, Any] | None
    """Where the current attempt runs, as its launch backend placed it: ``{"gpu_type", "gpu_count",
    "node"}``; None before it started, or for a v1 ``Started`` (then the submitted type and count)."""
    attempts: dict[str, dict[str, Any]]
    """Every started attempt (``str(attempt)``): ``{"lease", "gpu_type", "gpu_count", "node", "at"}``
    as its ``Started`` recorded them (``gpu_type``/``gpu_count``/``node``/``lease`` None for v1)."""
    stop_reason: str | None
    error: str | None
    metrics: dict[str, Any]
    usage: dict[str, int]
    """Charged milliseconds per usage group (encoded ``UsageGroupKey``)."""
    credited: dict[str, int]
    """Credited milliseconds per usage group (never more than ``usage`` of the group)."""
    attempt_usage: dict[str, dict[str, int]]
    """``str(attempt)`` -> its charged milliseconds per group, in the order the groups were first metered."""
    attempt_credited: dict[str, dict[str, int]]
    """``str(attempt)`` -> its credited milliseconds per group."""
    faults: dict[str, dict[str, Any]]
    """``str(attempt)`` -> ``{"reason", "checkpoint_gpu_ms"}`` of an attempt ended by a platform fault."""
    metered_seq: dict[str, int]
    metered_ms: dict[str, int]
    """Per attempt (``str(attempt)``): the GPU ms per GPU metered so far, the sum of its ``UsageMetered``
    ``gpu_ms``: the highest cumulative total metered (``domain.cumulative``)."""
    meter_anchors: dict[str, dict[str, Any]]
    """Per attempt: ``{"at", "ms"}``, its clock anchor as its first v2 ``UsageMetered`` recorded it."""
    alerts: list[str]
    """Alerts raised, as ``"<scope>:<threshold_pct>"``."""
    resumed_attempts: int
    """Attempts begun by a resume (after a pause) rather than by a retry: not counted against
    ``max_retries`` (``retries_used``)."""
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_heartbeat_at: datetime | None


class Job(DomainAggregate, JobFields):
    """A fine-tuning job in a user's partition."""

    ID_KIND, ID_KEY = "job", "job_id"
    class_version = 5
    """Of its snapshots: v2 added ``lease``, ``placement``, ``attempts`` and checkpoints' ``gpu_ms_total``;
    v3 ``credited``, ``attempt_usage``, ``attempt_credited``, ``faults``, ``metered_ms`` and
    ``meter_anchors``; v4 ``start_from``; v5 ``resumed_attempts``."""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.update(lease=None, placement=None, attempts={})
        if state.get("checkpoint") is not None:
            state["checkpoint"].setdefault("gpu_ms_total", None)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """No credits before v3; the per-attempt usage of a v2 snapshot is unknown (a fault then
        credits only what the attempt is metered after it). Nor does it say which attempt metered
        what: each metered attempt is taken to have metered the job's whole time (an upper bound),
        so its next cumulative heartbeat can only be billed less, never twice."""
        state.update(credited={}, attempt_usage={}, attempt_credited={}, faults={})
        whole = sum(state.get("usage", {}).values())
        state["metered_ms"] = {attempt: whole for attempt in state.get("metered_seq", {})}
        state["meter_anchors"] = {}

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        """Jobs before v4 started from their base model."""
        state["start_from"] = None

    @staticmethod
    def upcast_v4_v5(state: dict[str, Any]) -> None:
        """No job was paused before v5: no attempt was begun by a resume."""
        state["resumed_attempts"] = 0

    # ---- events (stored: never rename or reshape; add a class_version and an upcaster) ----

    class Submitted(Aggregate.Created):
        """v2 added ``gpu_count``; v1 events ran on one GPU (``upcast_v1_v2``). v3 added ``start_from``
        (``JobFields.start_from``); earlier jobs started from their base model (``upcast_v2_v3``)."""

        class_version = 3
        job_id: str
        user_id: str
        base_model: str
        dataset_id: str
        model_id: str
        config: dict[str, Any]
        gpu_type: str
        gpu_count: int
        max_cost_usd_micros: int | None
        estimate_usd_micros: int | None
        start_from: dict[str, Any] | None
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["gpu_count"] = 1

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["start_from"] = None

        def apply(self, job: Job) -> None:
            job.job_id, job.user_id, job.base_model = self.job_id, self.user_id, self.base_model
            job.dataset_id, job.model_id, job.config = self.dataset_id, self.model_id, dict(self.config)
            job.gpu_type, job.gpu_count = self.gpu_type, self.gpu_count
            job.max_cost_usd_micros, job.estimate_usd_micros = (
                self.max_cost_usd_micros,
                self.estimate_usd_micros,
            )
            job.state, job.attempt, job.step, job.progress_attempt, job.total_steps = (
                S.SUBMITTED,
                0,
                0,
                0,
                None,
            )
            job.epoch, job.loss, job.tokens, job.checkpoint = None, None, 0, None
            job.start_from = None if self.start_from is None else dict(self.start_from)
            job.lease, job.placement, job.attempts = None, None, {}
            job.stop_reason, job.error, job.metrics = None, None, {}
            job.usage, job.metered_seq, job.alerts = {}, {}, []
            job.credited, job.attempt_usage, job.attempt_credited, job.faults = {}, {}, {}, {}
            job.metered_ms, job.meter_anchors = {}, {}
            job.resumed_attempts = 0
            job.submitted_at = job.updated_at = self.at
            job.started_at = job.finished_at = job.last_heartbeat_at = None

    class Queued(Aggregate.Event):
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.QUEUED, self.at)

    class Started(Aggregate.Event):
        """v2 added the fencing ``lease`` and the placement (``gpu_type``, ``gpu_count``, ``node``: what
        the launch backend placed the attempt on); v1 events have None (priced as submitted)."""

        class_version = 2
        attempt: int
        lease: str | None
        gpu_type: str | None
        gpu_count: int | None
        node: str | None
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(lease=None, gpu_type=None, gpu_count=None, node=None)

        def apply(self, job: Job) -> None:
            job._move(S.RUNNING, self.at)
            job.attempt, job.lease = self.attempt, self.lease
            job.placement = (
                None
                if self.gpu_type is None
                else {"gpu_type": self.gpu_type, "gpu_count": self.gpu_count, "node": self.node}
            )
            job.attempts[str(self.attempt)] = {
                "lease": self.lease,
                "gpu_type": self.gpu_type,
                "gpu_count": self.gpu_count,
                "node": self.node,
                "at": self.at,
            }
            job.last_heartbeat_at = self.at
            if job.started_at is None:
                job.started_at = self.at

    class ProgressReported(Aggregate.Event):
        attempt: int
        step: int
        total_steps: int | None
        epoch: float | None
        loss: float | None
        tokens: int
        at: datetime

        def apply(self, job: Job) -> None:
            job.step, job.progress_attempt = self.step, self.attempt
            job.total_steps, job.epoch = self.total_steps, self.epoch
            job.loss, job.tokens = self.loss, self.tokens
            job.updated_at = job.last_heartbeat_at = self.at

    class ActivityReported(Aggregate.Event):
        """What the attempt is busy with while no training step says it (``None``: nothing to tell)."""

        attempt: int
        activity: str | None
        at: datetime

        def apply(self, job: Job) -> None:
            job.updated_at = self.at

    class CheckpointSaved(Aggregate.Event):
        """v2 added ``gpu_ms_total``: the attempt's cumulative GPU milliseconds when the checkpoint was
        written (None for v1: unknown)."""

        class_version = 2
        attempt: int
        step: int
        path: str
        gpu_ms_total: int | None
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["gpu_ms_total"] = None

        def apply(self, job: Job) -> None:
            job.checkpoint = {
                "attempt": self.attempt,
                "step": self.step,
                "path": self.path,
                "at": self.at,
                "gpu_ms_total": self.gpu_ms_total,
            }
            job.updated_at = job.last_heartbeat_at = self.at

    class UsageMetered(Aggregate.Event):
        """``gpu_ms``: what heartbeats ``first_seq..last_seq`` added to the attempt's metered total.

        v2 added the raw heartbeat archive the usage was metered from (``archive``: its object
        name, ``archive_sha256``: the sha256 of its bytes) and the attempt's clock anchor
        (``anchor_at``, ``anchor_ms``: ``domain.cumulative``); None for v1 events (per-interval
        heartbeats, not archived)."""

        class_version = 2
        attempt: int
        first_seq: int
        last_seq: int
        gpu_type: str
        gpu_count: int
        gpu_ms: int
        usd_micros_per_hour: int
        period: str
        archive: str | None
        archive_sha256: str | None
        anchor_at: datetime | None
        anchor_ms: int | None
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(archive=None, archive_sha256=None, anchor_at=None, anchor_ms=None)

        def apply(self, job: Job) -> None:
            key = UsageGroupKey(
                self.period, job.job_id, self.gpu_type, self.gpu_count, self.usd_micros_per_hour
            )
            add_usage(job.usage, key, self.gpu_ms)
            add_usage(job.attempt_usage.setdefault(str(self.attempt), {}), key, self.gpu_ms)
            attempt = str(self.attempt)
            job.metered_seq[attempt] = self.last_seq
            job.metered_ms[attempt] = job.metered_ms.get(attempt, 0) + self.gpu_ms
            if self.anchor_at is not None and attempt not in job.meter_anchors:
                job.meter_anchors[attempt] = {"at": self.anchor_at, "ms": self.anchor_ms or 0}
            job.updated_at = self.at

    class HeartbeatsRejected(Aggregate.Event):
        """The ledger refused to bill ``count`` heartbeats of ``attempt`` (seqs ``first_seq..last_seq``)
        for ``reason`` (``HEARTBEAT_CONTRADICTS_PLACEMENT`` or ``HEARTBEAT_LEASE_SUPERSEDED``): evidence
        for the audit, recorded in the commit of the batch they came in; nothing else changes."""

        attempt: int
        first_seq: int
        last_seq: int
        count: int
        reason: str
        at: datetime

        def apply(self, job: Job) -> None:
            pass

    class AttemptFaulted(Aggregate.Event):
        """The attempt ended for the platform's reasons (``reason``, one of ``PLATFORM_FAULTS``): its GPU
        time past ``checkpoint_gpu_ms`` (its ms at its last checkpoint of its own, 0 if none; None: a
        v1 checkpoint, nothing credited) is credited, now and as it is metered later."""

        attempt: int
        reason: str
        checkpoint_gpu_ms: int | None
        at: datetime

        def apply(self, job: Job) -> None:
            fault = {"reason": self.reason, "checkpoint_gpu_ms": self.checkpoint_gpu_ms}
            job.faults[str(self.attempt)] = fault
            job.updated_at = self.at

    class UsageCredited(Aggregate.Event):
        """``gpu_ms`` of the attempt's usage in one group are credited (``reason``: a platform fault or
        ``limit``); the group's net cost is priced on its charged less credited milliseconds."""

        attempt: int
        period: str
        gpu_type: str
        gpu_count: int
        usd_micros_per_hour: int
        gpu_ms: int
        reason: str
        at: datetime

        def apply(self, job: Job) -> None:
            key = UsageGroupKey(
                self.period, job.job_id, self.gpu_type, self.gpu_count, self.usd_micros_per_hour
            )
            add_usage(job.credited, key, self.gpu_ms)
            add_usage(job.attempt_credited.setdefault(str(self.attempt), {}), key, self.gpu_ms)
            job.updated_at = self.at

    class AlertRaised(Aggregate.Event):
        scope: str
        threshold_pct: int
        spent_usd_micros: int
        limit_usd_micros: int
        at: datetime

        def apply(self, job: Job) -> None:
            job.alerts.append(f"{self.scope}:{self.threshold_pct}")
            job.updated_at = self.at

    class StopRequested(Aggregate.Event):
        reason: str
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.STOPPING, self.at)
            job.stop_reason = self.reason

    class Stopped(Aggregate.Event):
        reason: str
        step: int
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.STOPPED, self.at)
            job.stop_reason, job.step, job.finished_at = self.reason, self.step, self.at

    class Succeeded(Aggregate.Event):
        model_id: str
        metrics: dict[str, Any]
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.SUCCEEDED, self.at)
            job.model_id, job.metrics, job.finished_at = self.model_id, dict(self.metrics), self.at

    class Failed(Aggregate.Event):
        error: str
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.FAILED, self.at)
            job.error, job.finished_at = self.error, self.at

    class Retrying(Aggregate.Event):
        attempt: int
        reason: str
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.RETRYING, self.at)
            job.attempt, job.error = self.attempt, self.reason
            job.lease = job.placement = None  # the announced attempt has not started: no lease yet

    class Lost(Aggregate.Event):
        last_heartbeat_at: datetime | None
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.LOST, self.at)
            if self.last_heartbeat_at is not None:
                job.last_heartbeat_at = self.last_heartbeat_at

    class PauseRequested(Aggregate.Event):
        """The user asked a running job to pause: its runner checkpoints and ends the attempt."""

        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.PAUSING, self.at)

    class Paused(Aggregate.Event):
        """No attempt runs any more (``step``: where it stands, its last checkpoint's when it has one);
        the current attempt's lease and placement are released."""

        step: int
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.PAUSED, self.at)
            job.step = self.step
            job.lease = job.placement = None

    class Resumed(Aggregate.Event):
        """A paused job is queued again; its next attempt resumes from its last checkpoint."""

        at: datetime

        def apply(self, job: Job) -> None:
            if next_attempt(job.attempt, job.attempts) > job.attempt >= 1:
                job.resumed_attempts += 1
            job._move(S.QUEUED, self.at)

    # ---- commands ----

    @classmethod
    def submit(
        cls,
        *,
        job_id: str,
        user_id: str,
        base_model: str,
        dataset_id: str,
        model_id: str,
        config: dict[str, Any],
        gpu_type: str,
        gpu_count: int,
        max_cost_usd_micros: int | None,
        estimate_usd_micros: int | None,
        at: datetime,
        start_from: dict[str, Any] | None = None,
    ) -> Job:
        """A new job in state ``submitted``; ``config`` is the whole, already-validated training config;
        ``start_from`` where its training starts (``JobFields.start_from``; None: its base model)."""
        check_ids(
            job_id=job_id, user_id=user_id, base_model=base_model, dataset_id=dataset_id, model_id=model_id
        )
        _check_gpu(gpu_type, gpu_count)
        if not isinstance(config, dict):
            raise ValidationFailed("config must be a mapping of settings", where="config")
        for name, micros in (
            ("max_cost_usd_micros", max_cost_usd_micros),
            ("estimate_usd_micros", estimate_usd_micros),
        ):
            if micros is not None:
                check_count(micros, where=name)
        _check_start_from(start_from)
        return cls._create_at(
            cls.Submitted,
            at,
            job_id=job_id,
            user_id=user_id,
            base_model=base_model,
            dataset_id=dataset_id,
            model_id=model_id,
            config=dict(config),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            max_cost_usd_micros=max_cost_usd_micros,
            estimate_usd_micros=estimate_usd_micros,
            start_from=None if start_from is None else dict(start_from),
        )

    def queue(self, at: datetime) -> None:
        """A submitted job waits for the dispatcher (a paused one is queued again by ``resume``)."""
        if self.state == S.PAUSED:
            raise Conflict(f"job {self.job_id} is paused; resume it to queue it again")
        self._check_move(S.QUEUED, "queue")
        self._record(self.Queued, at)

    def start(
        self,
        attempt: int,
        at: datetime,
        *,
        lease: str | None = None,
        placement: Placement | None = None,
    ) -> None:
        """Attempt ``attempt`` began running: from ``queued`` the ``next_attempt`` (1 for a new job),
        the announced one from ``retrying``.

        ``lease`` is the attempt's fencing token (with ``attempt``); ``placement`` what the launch
        backend placed it on (None: priced as submitted). A second runner for an attempt that
        already started (another lease) is refused as ``superseded``: only the first one runs."""
        started = self.attempts.get(str(attempt))
        if started is not None and lease is not None and started["lease"] != lease:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} already started under another lease; "
                "this runner is superseded",
                where="lease",
                code=SUPERSEDED,
            )
        self._check_move(S.RUNNING, "start")
        expected = next_attempt(self.attempt, self.attempts) if self.state == S.QUEUED else self.attempt
        if attempt != expected:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} cannot start; the next attempt is {expected}",
                where="attempt",
            )
        if lease is not None:
            check_text(lease, where="lease", max_length=64)
        if placement is not None:
            _check_gpu(placement.gpu_type, placement.gpu_count)
        self._record(
            self.Started,
            at,
            attempt=attempt,
            lease=lease,
            gpu_type=None if placement is None else placement.gpu_type,
            gpu_count=None if placement is None else placement.gpu_count,
            node=None if placement is None else placement.node,
        )

    def report_progress(
        self,
        attempt: int,
        step: int,
        total_steps: int | None,
        epoch: float | None,
        loss: float | None,
        tokens: int,
        at: datetime,
        *,
        lease: str | None = None,
    ) -> None:
        """Training progress of the current attempt; ``step`` never goes back within an attempt."""
        self._check_reporting(attempt, "report progress for", lease)
        check_count(step, where="step")
        check_count(tokens, where="tokens")
        if total_steps is not None:
            check_count(total_steps, where="total_steps")
        if attempt == self.progress_attempt and step < self.step:
            raise Conflict(
                f"job {self.job_id}: step {step} is behind step {self.step} already reported", where="step"
            )
        self._record(
            self.ProgressReported,
            at,
            attempt=attempt,
            step=step,
            total_steps=total_steps,
            epoch=_finite_or_none(epoch, "epoch"),
            loss=_finite_or_none(loss, "loss"),
            tokens=tokens,
        )

    def report_activity(
        self, attempt: int, activity: str | None, at: datetime, *, lease: str | None = None
    ) -> None:
        """What the current attempt is doing before training says it with steps (e.g. converting its
        base model on first use); ``None`` once it is done. Shown in the job's status until then."""
        self._check_reporting(attempt, "report activity for", lease)
        if activity is not None:
            check_text(activity, where="activity", max_length=200)
        self._record(self.ActivityReported, at, attempt=attempt, activity=activity)

    def save_checkpoint(
        self,
        attempt: int,
        step: int,
        path: str,
        at: datetime,
        *,
        gpu_ms_total: int | None = None,
        lease: str | None = None,
    ) -> None:
        """A resumable checkpoint at ``step`` now lies at ``path`` (an object prefix in the bucket),
        written when the attempt had used ``gpu_ms_total`` GPU milliseconds (None: unknown)."""
        self._check_reporting(attempt, "save a checkpoint for", lease)
        check_count(step, where="step")
        check_text(path, where="path")
        if gpu_ms_total is not None:
            check_count(gpu_ms_total, where="gpu_ms_total")
        self._record(
            self.CheckpointSaved, at, attempt=attempt, step=step, path=path, gpu_ms_total=gpu_ms_total
        )

    def meter_usage(
        self,
        attempt: int,
        first_seq: int,
        last_seq: int,
        gpu_type: str,
        gpu_count: int,
        gpu_ms: int,
        usd_micros_per_hour: int,
        period: str,
        at: datetime,
        *,
        period_room: int | None = None,
        archive: str | None = None,
        archive_sha256: str | None = None,
        anchor_at: datetime | None = None,
        anchor_ms: int | None = None,
    ) -> None:
        """Bill heartbeats ``first_seq..last_seq`` of ``attempt``: ``gpu_ms`` (what they add to the
        attempt's metered total) at the price in force, metered from the heartbeats in ``archive``
        (an object whose bytes have sha256 ``archive_sha256``), under the attempt's clock anchor.

        Then, in the same change: credit the part of it past the attempt's checkpoint if a platform
        fault ended the attempt; credit (``limit``) the part that would take the job's net cost past
        its ``max_cost``, or its net cost in ``period`` past ``period_room`` (the monthly budget less
        the user's other spend in the period; None: no budget)."""
        self._check_started(attempt)
        _check_seqs(first_seq, last_seq)
        last = self.metered_seq.get(str(attempt))
        if last is not None and first_seq <= last:
            raise Conflict(
                f"job {self.job_id}: heartbeats up to seq {last} of attempt {attempt} are already "
                f"metered (batch starts at {first_seq})",
                where="first_seq",
            )
        _check_gpu(gpu_type, gpu_count)
        check_count(gpu_ms, where="gpu_ms")
        check_count(usd_micros_per_hour, where="usd_micros_per_hour")
        check_period(period)
        if (archive is None) != (archive_sha256 is None):
            raise ValidationFailed("an archive needs its sha256, and a sha256 its archive", where="archive")
        if archive is not None:
            check_text(archive, where="archive")
            if not _SHA256.fullmatch(archive_sha256 or ""):
                raise ValidationFailed("archive_sha256 must be 64 lower-case hex digits", where="archive")
        if (anchor_at is None) != (anchor_ms is None):
            raise ValidationFailed("an anchor needs its time and its milliseconds", where="anchor_at")
        if anchor_at is not None:
            check_utc(anchor_at, where="anchor_at")
            check_count(anchor_ms or 0, where="anchor_ms")
        if period_room is not None and not isinstance(period_room, int):
            raise ValidationFailed("period_room must be an integer of micro-dollars", where="period_room")
        key = UsageGroupKey(period, self.job_id, gpu_type, gpu_count, usd_micros_per_hour)
        credited_before = self._attempt_credited(attempt, key)
        self._record(
            self.UsageMetered,
            at,
            attempt=attempt,
            first_seq=first_seq,
            last_seq=last_seq,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            gpu_ms=gpu_ms,
            usd_micros_per_hour=usd_micros_per_hour,
            period=period,
            archive=archive,
            archive_sha256=archive_sha256,
            anchor_at=anchor_at,
            anchor_ms=anchor_ms,
        )
        self._credit_fault(attempt, at)
        fresh = gpu_ms - (self._attempt_credited(attempt, key) - credited_before)  # not credited yet
        if self.max_cost_usd_micros is not None:
            fresh -= self._cap(attempt, key, fresh, self.max_cost_usd_micros, None, at)
        if period_room is not None:
            self._cap(attempt, key, fresh, period_room, period, at)

    def credit_platform_fault(self, attempt: int, reason: str, at: datetime) -> None:
        """Attempt ``attempt`` ended for the platform's reasons: credit its GPU time past its last
        checkpoint of its own (see the module docstring). Once per attempt: again does nothing."""
        if reason not in PLATFORM_FAULTS:
            raise ValidationFailed(
                f"a platform fault is one of {', '.join(sorted(PLATFORM_FAULTS))} (got {reason!r:.40})",
                where="fault",
            )
        self._check_started(attempt)
        if str(attempt) in self.faults:
            return
        point = self.checkpoint
        own = point is not None and point["attempt"] == attempt
        checkpoint_gpu_ms = point.get("gpu_ms_total") if own else 0  # type: ignore[union-attr]
        self._record(
            self.AttemptFaulted, at, attempt=attempt, reason=reason, checkpoint_gpu_ms=checkpoint_gpu_ms
        )
        self._credit_fault(attempt, at)

    def reject_heartbeats(
        self, attempt: int, first_seq: int, last_seq: int, count: int, reason: str, at: datetime
    ) -> None:
        """The ledger refused to bill ``count`` heartbeats of ``attempt`` with seqs in
        ``first_seq..last_seq`` for ``reason`` (one of ``HEARTBEAT_REJECTION_REASONS``)."""
        if not 1 <= attempt <= self.attempt:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} has not started (last started: {self.attempt})",
                where="attempt",
            )
        _check_seqs(first_seq, last_seq)
        check_count(count, where="count", minimum=1)
        if reason not in HEARTBEAT_REJECTION_REASONS:
            raise ValidationFailed(
                f"unknown rejection reason {reason!r:.40}; "
                f"one of {', '.join(sorted(HEARTBEAT_REJECTION_REASONS))}",
                where="reason",
            )
        self._record(
            self.HeartbeatsRejected,
            at,
            attempt=attempt,
            first_seq=first_seq,
            last_seq=last_seq,
            count=count,
            reason=reason,
        )

    def raise_alert(
        self, scope: str, threshold_pct: int, spent_usd_micros: int, limit_usd_micros: int, at: datetime
    ) -> None:
        """Spending crossed ``threshold_pct`` of a limit (``scope``: ``job`` or ``budget``); once each."""
        check_id(scope, kind="scope")
        check_count(threshold_pct, where="threshold_pct", minimum=1, maximum=1000)
        check_count(spent_usd_micros, where="spent_usd_micros")
        check_count(limit_usd_micros, where="limit_usd_micros")
        if f"{scope}:{threshold_pct}" in self.alerts:
            raise Conflict(
                f"job {self.job_id}: the {threshold_pct}% {scope} alert was already raised",
                where="threshold_pct",
            )
        self._record(
            self.AlertRaised,
            at,
            scope=scope,
            threshold_pct=threshold_pct,
            spent_usd_micros=spent_usd_micros,
            limit_usd_micros=limit_usd_micros,
        )

    def request_stop(self, reason: str, at: datetime) -> None:
        """Ask a running job to stop (-> ``stopping``); a job with nothing running stops at once."""
        check_text(reason, where="reason")
        if self.state in CANCELLABLE_STATES:
            self._record(self.Stopped, at, reason=reason, step=self.step)
            return
        self._check_move(S.STOPPING, "stop")
        self._record(self.StopRequested, at, reason=reason)

    def request_pause(self, at: datetime) -> None:
        """Ask the job to pause: a running one -> ``pausing`` (its runner checkpoints and ends the
        attempt, then ``mark_paused``); one with nothing running is ``paused`` at once."""
        if self.state in PAUSE_AT_ONCE_STATES:
            self._record(self.Paused, at, step=self._resume_step())
            return
        if self.state in (S.PAUSING, S.PAUSED):
            raise Conflict(f"job {self.job_id} is {self.state} already")
        if self.state in TERMINAL_STATES:
            raise Conflict(f"job {self.job_id} is {self.state}: it has ended, there is nothing to pause")
        self._check_move(S.PAUSING, "pause")
        self._record(self.PauseRequested, at)

    def mark_paused(self, at: datetime, *, step: int | None = None, lease: str | None = None) -> None:
        """The pausing job's attempt ended (its runner, ``lease`` given, after saving a checkpoint;
        the control plane, without, once the attempt is ``lost``): ``paused``. ``step``: where
        it stands (default: its last checkpoint's step, else its step)."""
        self.check_lease(lease, "mark paused")
        if self.state not in (S.PAUSING, S.LOST):
            raise Conflict(f"job {self.job_id} is {self.state}; only a pausing job can be marked paused")
        if step is not None:
            check_count(step, where="step")
        self._record(self.Paused, at, step=self._resume_step() if step is None else step)

    def resume(self, at: datetime) -> None:
        """Queue a paused job again: its next attempt resumes from its last checkpoint."""
        if self.state != S.PAUSED:
            raise Conflict(f"job {self.job_id} is {self.state}; only a paused job can be resumed")
        self._record(self.Resumed, at)

    def _resume_step(self) -> int:
        """The step a paused job stands at: its last checkpoint's (what a resume starts from), else 0
        when nothing was ever checkpointed (a resume starts from the beginning)."""
        return 0 if self.checkpoint is None else int(self.checkpoint["step"])

    def mark_stopped(
        self, at: datetime, *, step: int | None = None, reason: str | None = None, lease: str | None = None
    ) -> None:
        """The runner stopped (after a stop request, or on its own from ``running``); ``lease``: the
        runner's (None: the control plane says so)."""
        self.check_lease(lease, "mark stopped")
        self._check_move(S.STOPPED, "mark stopped")
        if step is not None:
            check_count(step, where="step")
        reason = reason or self.stop_reason or "stopped"
        self._record(self.Stopped, at, reason=reason, step=self.step if step is None else step)

    def mark_succeeded(
        self, at: datetime, *, metrics: dict[str, Any] | None = None, lease: str | None = None
    ) -> None:
        """Training finished and the model ``model_id`` (named at submit) is written."""
        self.check_lease(lease, "mark succeeded")
        self._check_move(S.SUCCEEDED, "mark succeeded")
        self._record(self.Succeeded, at, model_id=self.model_id, metrics=dict(metrics or {}))

    def mark_failed(
        self, error: str, at: datetime, *, lease: str | None = None, fault: str | None = None
    ) -> None:
        """The job failed; ``fault`` (one of ``PLATFORM_FAULTS``): its attempt ended for the platform's
        reasons and is credited (``credit_platform_fault``). Without it, the user's: charged."""
        self.check_lease(lease, "mark failed")
        self._check_move(S.FAILED, "mark failed")
        check_text(error, where="error", max_length=10_000)
        self._check_fault(fault)
        if fault is not None and self.attempt >= 1:
            self.credit_platform_fault(self.attempt, fault, at)
        self._record(self.Failed, at, error=error)

    def retry(
        self, attempt: int, reason: str, at: datetime, *, lease: str | None = None, fault: str | None = None
    ) -> None:
        """Announce attempt ``attempt`` (= current + 1), to resume from the last checkpoint; ``fault``
        (one of ``PLATFORM_FAULTS``): the current attempt ended for the platform's reasons and is
        credited (``credit_platform_fault``). Without it (a failure of the user's config or data, or
        one the platform cannot tell), its time is charged. ``lease``: the runner's, that announces it
        (None: the control plane does)."""
        self.check_lease(lease, "retry")
        self._check_move(S.RETRYING, "retry")
        check_text(reason, where="reason", max_length=10_000)
        if attempt != self.attempt + 1:
            raise Conflict(
                f"job {self.job_id}: the next attempt is {self.attempt + 1}, not {attempt}", where="attempt"
            )
        self._check_fault(fault)
        if fault is not None and self.attempt >= 1:
            self.credit_platform_fault(self.attempt, fault, at)
        self._record(self.Retrying, at, attempt=attempt, reason=reason)

    def mark_lost(self, last_heartbeat_at: datetime | None, at: datetime) -> None:
        """No heartbeat for too long: the runner is presumed gone, a platform fault (``lost``): the
        attempt's GPU time past its last checkpoint is credited."""
        self._check_move(S.LOST, "mark lost")
        if last_heartbeat_at is not None:
            last_heartbeat_at = check_utc(last_heartbeat_at, where="last_heartbeat_at")
        self._record(self.Lost, at, last_heartbeat_at=last_heartbeat_at)
        self.credit_platform_fault(self.attempt, "lost", at)

    # ---- queries ----

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def meters(self) -> dict[int, AttemptMeter]:
        """What has been metered of each attempt (``domain.cumulative``): seq, total, clock anchor."""
        meters: dict[int, AttemptMeter] = {}
        for attempt, seq in self.metered_seq.items():
            anchor = self.meter_anchors.get(attempt)
            meters[int(attempt)] = AttemptMeter(
                seq=seq,
                ms=self.metered_ms.get(attempt, 0),
                anchor_at=None if anchor is None else anchor["at"],
                anchor_ms=0 if anchor is None else anchor["ms"],
            )
        return meters

    def cost(self) -> JobCostSummary:
        """Metered usage priced once per group: charged, credited and net (``domain.money``)."""
        return summarize_job_cost(self.job_id, self.usage, self.credited)

    def net_cost_usd_micros(self, period: str | None = None) -> int:
        """What the job costs net (charged less credited), in ``period`` only if given."""
        total = 0
        for encoded, charged in self.usage.items():
            key = UsageGroupKey.decode(encoded)
            if period is None or key.period == period:
                credited = self.credited.get(encoded, 0)
                total += group_costs(charged, credited, key.gpu_count, key.usd_micros_per_hour)[2]
        return total

    # ---- rules ----

    def _check_move(self, target: JobState, verb: str) -> None:
        if target not in TRANSITIONS[self.state]:
            allowed = sorted(s for s, targets in TRANSITIONS.items() if target in targets)
            raise Conflict(
                f"job {self.job_id} is {self.state}; cannot {verb} it "
                f"(only a job that is {' or '.join(allowed)} can)"
            )

    def _check_reporting(self, attempt: int, verb: str, lease: str | None) -> None:
        if attempt != self.attempt:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} is not the current attempt ({self.attempt}); "
                f"it is superseded and cannot {verb} the job",
                where="attempt",
                code=SUPERSEDED,
            )
        self.check_lease(lease, verb)
        if self.state not in REPORTING_STATES:
            raise Conflict(f"job {self.job_id} is {self.state}; cannot {verb} it")

    def check_lease(self, lease: str | None, verb: str) -> None:
        """A runner's report (``lease`` given) must carry the current attempt's lease."""
        if lease is not None and lease != self.lease:
            raise Conflict(
                f"job {self.job_id}: this runner's lease is not the lease of the current attempt "
                f"({self.attempt}, {self.state}); it is superseded and cannot {verb} the job",
                where="lease",
                code=SUPERSEDED,
            )

    def _move(self, state: JobState, at: datetime) -> None:
        self.state, self.updated_at = state, at

    def _check_started(self, attempt: int) -> None:
        if not isinstance(attempt, int) or not 1 <= attempt <= self.attempt:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} has not started (last started: {self.attempt})",
                where="attempt",
            )

    @staticmethod
    def _check_fault(fault: str | None) -> None:
        if fault is not None and fault not in PLATFORM_FAULTS:
            raise ValidationFailed(
                f"a platform fault is one of {', '.join(sorted(PLATFORM_FAULTS))} (got {fault!r:.40})",
                where="fault",
            )

    # ---- credits ----

    def _attempt_credited(self, attempt: int, key: UsageGroupKey) -> int:
        return self.attempt_credited.get(str(attempt), {}).get(key.encode(), 0)

    def _credit_fault(self, attempt: int, at: datetime) -> None:
        """Credit what a faulted attempt's rule says is due and is not credited yet."""
        fault = self.faults.get(str(attempt))
        if fault is None or fault["checkpoint_gpu_ms"] is None:
            return
        metered = sum(self.attempt_usage.get(str(attempt), {}).values())
        credited = sum(self.attempt_credited.get(str(attempt), {}).values())
        due = metered - fault["checkpoint_gpu_ms"] - credited
        for encoded, charged in reversed(list(self.attempt_usage.get(str(attempt), {}).items())):
            if due <= 0:
                break
            key = UsageGroupKey.decode(encoded)
            take = min(due, charged - self._attempt_credited(attempt, key))
            if take > 0:
                self._credit(attempt, key, take, fault["reason"], at)
                due -= take

    def _cap(
        self, attempt: int, key: UsageGroupKey, fresh: int, limit: int, period: str | None, at: datetime
    ) -> int:
        """Credit (``limit``) the least of ``fresh`` ms just metered in group ``key`` that brings the job's
        net cost (in ``period`` if given) to at most ``limit``: the most ms that fit stay charged.
        Returns the ms credited."""
        net = self.net_cost_usd_micros(period)
        if fresh <= 0 or net <= limit:
            return 0
        encoded = key.encode()
        left = self.usage[encoded] - self.credited.get(encoded, 0)
        group_net = group_costs(self.usage[encoded], self.credited.get(encoded, 0), *key[3:])[2]
        allowed = limit - (net - group_net)  # what this group may cost
        fits = max_ms_within(allowed, key.gpu_count, key.usd_micros_per_hour) if allowed >= 0 else 0
        if fits is None:  # a free group costs nothing: another group is over, which no credit here mends
            return 0
        take = left - max(min(fits, left), left - fresh)
        if take > 0:
            self._credit(attempt, key, take, LIMIT_CREDIT, at)
        return take

    def _credit(self, attempt: int, key: UsageGroupKey, gpu_ms: int, reason: str, at: datetime) -> None:
        self._record(
            self.UsageCredited,
            at,
            attempt=attempt,
            period=key.period,
            gpu_type=key.gpu_type,
            gpu_count=key.gpu_count,
            usd_micros_per_hour=key.usd_micros_per_hour,
            gpu_ms=gpu_ms,
            reason=reason,
        )


def next_attempt(attempt: int, attempts: dict[str, Any]) -> int:
    """The attempt a queued job starts next, given its current ``attempt`` and its started
    ``attempts``: the current one if it was announced and never started (a job paused while
    ``retrying``), else the one after it (1 for a job that never ran)."""
    return attempt if attempt >= 1 and str(attempt) not in attempts else attempt + 1


def retries_used(attempt: int, resumed_attempts: int) -> int:
    """The attempt number the retry rule (``domain.metering.may_retry``) is asked about: attempts
    begun by a resume are not retries, so they are left out."""
    return attempt - resumed_attempts


START_KINDS = ("checkpoint", "model")
"""What a job can start from besides its base model: a checkpoint (of a job of the same user) or a model."""


def _check_start_from(start_from: dict[str, Any] | None) -> None:
    if start_from is None:
        return
    if not isinstance(start_from, dict) or sorted(start_from) != ["id", "kind", "path"]:
        raise ValidationFailed("start_from must be a mapping of kind, id and path", where="start_from")
    if start_from["kind"] not in START_KINDS:
        raise ValidationFailed(
            f"start_from's kind is one of {', '.join(START_KINDS)} (got {start_from['kind']!r:.40})",
            where="start_from",
        )
    check_text(start_from["id"], where="start_from", max_length=200)
    check_text(start_from["path"], where="start_from")


def _check_seqs(first_seq: int, last_seq: int) -> None:
    """A batch of one attempt's heartbeats: seqs ``first_seq..last_seq``, counts, in order."""
    check_count(first_seq, where="first_seq")
    check_count(last_seq, where="last_seq", minimum=first_seq)


def _check_gpu(gpu_type: str, gpu_count: int) -> None:
    check_gpu_type(gpu_type)
    check_count(gpu_count, where="gpu_count", minimum=1, maximum=16)


def _finite_or_none(value: float | None, where: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or value in (float("inf"), float("-inf"))
    ):
        raise ValidationFailed(f"{where} must be a finite number", where=where)
    return float(value)
