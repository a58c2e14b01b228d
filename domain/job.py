"""The fine-tuning job: its state machine, attempts, progress, checkpoints and metered GPU time.

The states, the table of allowed transitions (with its diagram) and the named sets of states
live in ``domain.job_states`` (re-exported here). ``Job`` moves only along ``TRANSITIONS``;
anything else raises ``Conflict`` naming the job, its state and what was asked, and records
nothing. Attempts count from 1; reports (progress, checkpoints) must name the current attempt,
so a runner left over from an earlier attempt cannot move the job. Usage is metered in batches
of heartbeats ``first_seq..last_seq`` per attempt; a batch that does not start after the last
metered seq of its attempt is refused, so a redelivered batch is never billed twice. Usage is
accepted in any state once the attempt has started (the last batch may arrive after the end).
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
    REPORTING_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    JobState,
)
from domain.money import JobCostSummary, UsageGroupKey, add_usage, check_period, summarize_job_cost
from domain.placement import Placement
from domain.pricing import check_gpu_type

__all__ = ["ACTIVE_STATES", "TERMINAL_STATES", "TRANSITIONS", "Job", "JobFields", "JobState"]


S = JobState
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    metered_seq: dict[str, int]
    metered_ms: dict[str, int]
    """Per attempt (``str(attempt)``): the GPU ms per GPU metered so far, the sum of its ``UsageMetered``
    ``gpu_ms``: the highest cumulative total metered (``domain.cumulative``)."""
    meter_anchors: dict[str, dict[str, Any]]
    """Per attempt: ``{"at", "ms"}``, its clock anchor as its first v2 ``UsageMetered`` recorded it."""
    alerts: list[str]
    """Alerts raised, as ``"<scope>:<threshold_pct>"``."""
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_heartbeat_at: datetime | None


class Job(DomainAggregate, JobFields):
    """A fine-tuning job in a user's partition."""

    ID_KIND, ID_KEY = "job", "job_id"
    class_version = 3
    """Of its snapshots: v2 added ``lease``, ``placement``, ``attempts`` and checkpoints' ``gpu_ms_total``;
    v3 ``metered_ms`` and ``meter_anchors``."""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.update(lease=None, placement=None, attempts={})
        if state.get("checkpoint") is not None:
            state["checkpoint"].setdefault("gpu_ms_total", None)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        # A snapshot does not say which attempt metered what: each metered attempt is taken to have
        # metered the job's whole time (an upper bound), so its next cumulative heartbeat can only
        # be billed less, never twice.
        whole = sum(state.get("usage", {}).values())
        state["metered_ms"] = {attempt: whole for attempt in state.get("metered_seq", {})}
        state["meter_anchors"] = {}

    # ---- events (stored: never rename or reshape; add a class_version and an upcaster) ----

    class Submitted(Aggregate.Created):
        """v2 added ``gpu_count``; v1 events ran on one GPU (``upcast_v1_v2``)."""

        class_version = 2
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
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["gpu_count"] = 1

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
            job.lease, job.placement, job.attempts = None, None, {}
            job.stop_reason, job.error, job.metrics = None, None, {}
            job.usage, job.metered_seq, job.alerts = {}, {}, []
            job.metered_ms, job.meter_anchors = {}, {}
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
            attempt = str(self.attempt)
            job.metered_seq[attempt] = self.last_seq
            job.metered_ms[attempt] = job.metered_ms.get(attempt, 0) + self.gpu_ms
            if self.anchor_at is not None and attempt not in job.meter_anchors:
                job.meter_anchors[attempt] = {"at": self.anchor_at, "ms": self.anchor_ms or 0}
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

    class Lost(Aggregate.Event):
        last_heartbeat_at: datetime | None
        at: datetime

        def apply(self, job: Job) -> None:
            job._move(S.LOST, self.at)
            if self.last_heartbeat_at is not None:
                job.last_heartbeat_at = self.last_heartbeat_at

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
    ) -> Job:
        """A new job in state ``submitted``; ``config`` is the whole, already-validated training config."""
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
        )

    def queue(self, at: datetime) -> None:
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
        """Attempt ``attempt`` began running: 1 from ``queued``, the announced one from ``retrying``.

        ``lease`` is the attempt's fencing token (with ``attempt``); ``placement`` what the launch
        backend placed it on (None: priced as submitted)."""
        self._check_move(S.RUNNING, "start")
        expected = self.attempt + 1 if self.state == S.QUEUED else self.attempt
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
    ) -> None:
        """Training progress of the current attempt; ``step`` never goes back within an attempt."""
        self._check_reporting(attempt, "report progress for")
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

    def report_activity(self, attempt: int, activity: str | None, at: datetime) -> None:
        """What the current attempt is doing before training says it with steps (e.g. converting its
        base model on first use); ``None`` once it is done. Shown in the job's status until then."""
        self._check_reporting(attempt, "report activity for")
        if activity is not None:
            check_text(activity, where="activity", max_length=200)
        self._record(self.ActivityReported, at, attempt=attempt, activity=activity)

    def save_checkpoint(
        self, attempt: int, step: int, path: str, at: datetime, *, gpu_ms_total: int | None = None
    ) -> None:
        """A resumable checkpoint at ``step`` now lies at ``path`` (an object prefix in the bucket),
        written when the attempt had used ``gpu_ms_total`` GPU milliseconds (None: unknown)."""
        self._check_reporting(attempt, "save a checkpoint for")
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
        archive: str | None = None,
        archive_sha256: str | None = None,
        anchor_at: datetime | None = None,
        anchor_ms: int | None = None,
    ) -> None:
        """Bill heartbeats ``first_seq..last_seq`` of ``attempt``: ``gpu_ms`` (what they add to the
        attempt's metered total) at the price in force, metered from the heartbeats in ``archive``
        (an object whose bytes have sha256 ``archive_sha256``), under the attempt's clock anchor."""
        if not 1 <= attempt <= self.attempt:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} has not started (last started: {self.attempt})",
                where="attempt",
            )
        check_count(first_seq, where="first_seq")
        check_count(last_seq, where="last_seq", minimum=first_seq)
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

    def mark_stopped(self, at: datetime, *, step: int | None = None, reason: str | None = None) -> None:
        """The runner stopped (after a stop request, or on its own from ``running``)."""
        self._check_move(S.STOPPED, "mark stopped")
        if step is not None:
            check_count(step, where="step")
        reason = reason or self.stop_reason or "stopped"
        self._record(self.Stopped, at, reason=reason, step=self.step if step is None else step)

    def mark_succeeded(self, at: datetime, *, metrics: dict[str, Any] | None = None) -> None:
        """Training finished and the model ``model_id`` (named at submit) is written."""
        self._check_move(S.SUCCEEDED, "mark succeeded")
        self._record(self.Succeeded, at, model_id=self.model_id, metrics=dict(metrics or {}))

    def mark_failed(self, error: str, at: datetime) -> None:
        self._check_move(S.FAILED, "mark failed")
        check_text(error, where="error", max_length=10_000)
        self._record(self.Failed, at, error=error)

    def retry(self, attempt: int, reason: str, at: datetime) -> None:
        """Announce attempt ``attempt`` (= current + 1), to resume from the last checkpoint."""
        self._check_move(S.RETRYING, "retry")
        check_text(reason, where="reason", max_length=10_000)
        if attempt != self.attempt + 1:
            raise Conflict(
                f"job {self.job_id}: the next attempt is {self.attempt + 1}, not {attempt}", where="attempt"
            )
        self._record(self.Retrying, at, attempt=attempt, reason=reason)

    def mark_lost(self, last_heartbeat_at: datetime | None, at: datetime) -> None:
        """No heartbeat for too long: the runner is presumed gone."""
        self._check_move(S.LOST, "mark lost")
        if last_heartbeat_at is not None:
            last_heartbeat_at = check_utc(last_heartbeat_at, where="last_heartbeat_at")
        self._record(self.Lost, at, last_heartbeat_at=last_heartbeat_at)

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
        """Metered usage priced once per group (``domain.money``)."""
        return summarize_job_cost(self.job_id, self.usage)

    # ---- rules ----

    def _check_move(self, target: JobState, verb: str) -> None:
        if target not in TRANSITIONS[self.state]:
            allowed = sorted(s for s, targets in TRANSITIONS.items() if target in targets)
            raise Conflict(
                f"job {self.job_id} is {self.state}; cannot {verb} it "
                f"(only a job that is {' or '.join(allowed)} can)"
            )

    def _check_reporting(self, attempt: int, verb: str) -> None:
        if self.state not in REPORTING_STATES:
            raise Conflict(f"job {self.job_id} is {self.state}; cannot {verb} it")
        if attempt != self.attempt:
            raise Conflict(
                f"job {self.job_id}: attempt {attempt} is not the current attempt ({self.attempt})",
                where="attempt",
            )

    def _move(self, state: JobState, at: datetime) -> None:
        self.state, self.updated_at = state, at


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
