"""``UserApp``: one user's partition's Application (datasets, jobs, models, the budget, metering).

See ``domain.applications`` for the conventions every command follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from eventsourcing.utils import EnvType
from msgspec.structs import asdict

from domain.aggregate_cache import AggregateCache
from domain.api_keys import ApiKeyInfo, ApiKeys, format_key, new_secret
from domain.base import DomainAggregate
from domain.budget import DEFAULT_THRESHOLDS_PCT, Budget
from domain.dataset import Dataset
from domain.dataset_format import ValidationReport
from domain.errors import Conflict, NotFound, PlatformError
from domain.ids import check_id, new_id
from domain.job import Job, JobState, retries_used
from domain.metering import (
    JOB_SCOPE,
    MeteredJob,
    MeteringResult,
    RefusedRun,
    UsagePlan,
    job_policy,
    may_retry,
)
from domain.model import Model, ModelWeights
from domain.partition_app import PartitionApplication, check_version
from domain.partitions import USERS, user_events
from domain.placement import Placement
from domain.read_models import (
    BudgetView,
    DatasetView,
    JobView,
    ModelView,
    budget_view,
    dataset_view,
    job_view,
    model_view,
)
from domain.serving import ServedLine, ServingUsage

__all__ = ["ServingMetered", "UserApp"]


class ServingMetered(msgspec.Struct, frozen=True):
    """What ``UserApp.meter_serving`` recorded: events saved (0: nothing to meter), alerts raised."""

    events: int
    alerts: int


A = TypeVar("A", bound=DomainAggregate)


class UserApp(PartitionApplication):
    """One user's datasets, jobs, models and budget (partition ``users/<user_id>``).

    ``UserApp(user_id, env=None)``; without ``user_id`` it is read from ``TUNE_USER_ID`` or a
    ``TUNE_PARTITION`` of the form ``users/<user_id>/events/`` (the default partition).

    Datasets: ``upload_dataset``, ``validate_dataset``, ``reject_dataset``, ``delete_dataset``,
    ``get_dataset``. Jobs: ``submit_job``, ``queue_job``, ``start_job``, ``report_progress``,
    ``save_checkpoint``, ``request_stop``, ``mark_stopped``, ``mark_succeeded`` (registers the
    model), ``mark_failed``, ``retry_job``, ``mark_lost``, ``declare_lost``, ``get_job``. Models:
    ``delete_model``, ``get_model``. Budget: ``set_budget``, ``get_budget``. API keys:
    ``create_api_key``, ``list_api_keys``, ``revoke_api_key``, ``accepts_api_key``. The ledger:
    ``meter_usage`` (usage, alerts and stops of many jobs in one commit). Serving: ``meter_serving``
    (a flush of metered completions and the budget alerts it makes due, in one commit).
    """

    snapshotting_intervals = {Job: 200, ServingUsage: 200}

    def __init__(self, user_id: str | None = None, env: EnvType | None = None) -> None:
        env = dict(env or {})
        if user_id is not None:
            check_id(user_id, kind="user_id")
            env.setdefault("TUNE_USER_ID", user_id)
            env.setdefault("TUNE_PARTITION", user_events(user_id))
        super().__init__(env)
        partition = self.env.get("TUNE_PARTITION") or ""
        from_partition = partition.removeprefix(USERS).split("/")[0] if partition.startswith(USERS) else ""
        self.user_id = check_id(user_id or self.env.get("TUNE_USER_ID") or from_partition, kind="user_id")

    # ---- datasets ----

    def upload_dataset(
        self,
        dataset_id: str,
        filename: str,
        size_bytes: int,
        sha256: str,
        at: datetime,
        *,
        report: ValidationReport | None = None,
    ) -> DatasetView:
        """Record a stored raw file; with its validation ``report``, the verdict goes in the same commit
        (so a dataset is never left ``uploaded`` when the verdict could not be recorded)."""
        self._check_new(Dataset, dataset_id, "dataset_id")
        dataset = Dataset.upload(
            dataset_id=dataset_id,
            user_id=self.user_id,
            filename=filename,
            size_bytes=size_bytes,
            sha256=sha256,
            at=at,
        )
        if report is not None and report.ok:
            dataset.validate(report.format or "", report.rows, msgspec.to_builtins(report.stats), at)
        elif report is not None:
            dataset.reject([{"line": e.line, "message": e.message} for e in report.errors], at)
        self._save(dataset)
        return dataset_view(dataset)

    def validate_dataset(
        self,
        dataset_id: str,
        format: str,
        rows: int,
        stats: Mapping[str, Any],
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> DatasetView:
        return self._dataset(
            dataset_id, expected_version, lambda d: d.validate(format, rows, dict(stats), at)
        )

    def reject_dataset(
        self,
        dataset_id: str,
        errors: Sequence[Mapping[str, Any]],
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> DatasetView:
        return self._dataset(dataset_id, expected_version, lambda d: d.reject([dict(e) for e in errors], at))

    def delete_dataset(
        self,
        dataset_id: str,
        active_job_ids: Iterable[str],
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> DatasetView:
        """Conflict naming the jobs if any of ``active_job_ids`` uses it."""
        jobs = list(active_job_ids)
        return self._dataset(dataset_id, expected_version, lambda d: d.delete(at, jobs))

    def get_dataset(self, dataset_id: str) -> DatasetView:
        return dataset_view(self._load(Dataset, dataset_id, "dataset_id"))

    def _dataset(
        self, dataset_id: str, expected_version: int | None, action: Callable[[Dataset], None]
    ) -> DatasetView:
        return dataset_view(self._update(Dataset, dataset_id, "dataset_id", expected_version, action))

    # ---- jobs ----

    def submit_job(
        self,
        *,
        base_model: str,
        dataset_id: str,
        config: Mapping[str, Any],
        gpu_type: str,
        gpu_count: int,
        at: datetime,
        max_cost_usd_micros: int | None = None,
        estimate_usd_micros: int | None = None,
        job_id: str | None = None,
        model_id: str | None = None,
        start_from: Mapping[str, Any] | None = None,
    ) -> str:
        """A new ``submitted`` job; Conflict unless ``dataset_id`` is validated. Returns the job id.
        ``start_from``: the checkpoint or model its training starts from (``JobFields.start_from``)."""
        job_id = job_id or new_id("job")
        model_id = model_id or new_id("mdl")
        check_id(job_id, kind="job_id")
        self._load(Dataset, dataset_id, "dataset_id").check_usable()
        self._check_new(Job, job_id, "job_id")
        job = Job.submit(
            job_id=job_id,
            user_id=self.user_id,
            base_model=base_model,
            dataset_id=dataset_id,
            model_id=model_id,
            config=dict(config),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            max_cost_usd_micros=max_cost_usd_micros,
            estimate_usd_micros=estimate_usd_micros,
            at=at,
            start_from=None if start_from is None else dict(start_from),
        )
        self._save(job)
        return job_id

    def queue_job(self, job_id: str, at: datetime, *, expected_version: int | None = None) -> JobView:
        return self._job(job_id, expected_version, lambda j: j.queue(at))

    def start_job(
        self,
        job_id: str,
        attempt: int,
        at: datetime,
        *,
        lease: str | None = None,
        placement: Placement | None = None,
        expected_version: int | None = None,
    ) -> JobView:
        """Attempt ``attempt`` runs, fenced by ``lease``, on ``placement`` (``Job.start``)."""
        return self._job(
            job_id, expected_version, lambda j: j.start(attempt, at, lease=lease, placement=placement)
        )

    def report_progress(
        self,
        job_id: str,
        attempt: int,
        step: int,
        total_steps: int | None,
        epoch: float | None,
        loss: float | None,
        tokens: int,
        at: datetime,
        *,
        lease: str | None = None,
    ) -> JobView:
        """``lease``: the reporting runner's (every runner report carries it: ``Job``'s fencing)."""
        return self._job(
            job_id,
            None,
            lambda j: j.report_progress(attempt, step, total_steps, epoch, loss, tokens, at, lease=lease),
        )

    def report_activity(
        self, job_id: str, attempt: int, activity: str | None, at: datetime, *, lease: str | None = None
    ) -> JobView:
        return self._job(job_id, None, lambda j: j.report_activity(attempt, activity, at, lease=lease))

    def save_checkpoint(
        self,
        job_id: str,
        attempt: int,
        step: int,
        path: str,
        at: datetime,
        *,
        gpu_ms_total: int | None = None,
        lease: str | None = None,
    ) -> JobView:
        return self._job(
            job_id,
            None,
            lambda j: j.save_checkpoint(attempt, step, path, at, gpu_ms_total=gpu_ms_total, lease=lease),
        )

    def request_stop(
        self, job_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> JobView:
        """Running: -> ``stopping``; submitted/queued/retrying/lost: -> ``stopped`` at once."""
        return self._job(job_id, expected_version, lambda j: j.request_stop(reason, at))

    def request_pause(self, job_id: str, at: datetime) -> JobView:
        """Running: -> ``pausing``; submitted/queued/retrying/lost: -> ``paused`` at once
        (``Job.request_pause``)."""
        return self._job(job_id, None, lambda j: j.request_pause(at))

    def mark_paused(
        self, job_id: str, at: datetime, *, step: int | None = None, lease: str | None = None
    ) -> JobView:
        """The pausing job's attempt ended after its checkpoint: ``paused`` (``Job.mark_paused``)."""
        return self._job(job_id, None, lambda j: j.mark_paused(at, step=step, lease=lease))

    def resume_job(self, job_id: str, at: datetime) -> JobView:
        """A paused job is queued again (``Job.resume``); the dispatcher launches its next attempt."""
        return self._job(job_id, None, lambda j: j.resume(at))

    def mark_stopped(
        self,
        job_id: str,
        at: datetime,
        *,
        step: int | None = None,
        reason: str | None = None,
        lease: str | None = None,
        weights: ModelWeights | None = None,
    ) -> JobView:
        """The job stopped; with ``weights`` (its last checkpoint's, published), its model is
        registered in the same save, so a stopped job's model id answers. A superseded runner
        (``lease`` not the current attempt's) registers nothing."""
        job = self._load(Job, job_id, "job_id")
        job.check_lease(lease, "mark stopped")  # before the model: a fenced runner registers none
        model = None
        if weights is not None:
            model = self._new_model(job.model_id, job.job_id, job.base_model, weights, at)
        job.mark_stopped(at, step=step, reason=reason, lease=lease)
        self._save(job, *([model] if model else []))
        return job_view(job)

    def mark_succeeded(
        self,
        job_id: str,
        at: datetime,
        *,
        metrics: Mapping[str, Any] | None = None,
        weights: ModelWeights | None = None,
        lease: str | None = None,
    ) -> JobView:
        """The job succeeded; with ``weights``, its model is registered in the same save (atomic).
        A superseded runner (``lease`` not the current attempt's) registers nothing."""
        job = self._load(Job, job_id, "job_id")
        job.check_lease(lease, "mark succeeded")  # before the model: a fenced runner registers none
        model = None
        if weights is not None:
            model = self._new_model(job.model_id, job.job_id, job.base_model, weights, at)
        job.mark_succeeded(at, metrics=dict(metrics or {}), lease=lease)
        self._save(job, *([model] if model else []))
        return job_view(job)

    def mark_failed(
        self, job_id: str, error: str, at: datetime, *, lease: str | None = None, fault: str | None = None
    ) -> JobView:
        """Failed; ``fault`` (``domain.job.PLATFORM_FAULTS``): for the platform's reasons, credited."""
        return self._job(job_id, None, lambda j: j.mark_failed(error, at, lease=lease, fault=fault))

    def retry_job(
        self,
        job_id: str,
        attempt: int,
        reason: str,
        at: datetime,
        *,
        lease: str | None = None,
        fault: str | None = None,
    ) -> JobView:
        """Announce the next attempt; ``fault`` (``domain.job.PLATFORM_FAULTS``): the current one ended
        for the platform's reasons, its GPU time past its checkpoint is credited in the same commit;
        ``lease``: the runner's that announces it (None: the control plane)."""
        return self._job(job_id, None, lambda j: j.retry(attempt, reason, at, lease=lease, fault=fault))

    def credit_platform_fault(self, job_id: str, attempt: int, reason: str, at: datetime) -> JobView:
        """Attempt ``attempt`` ended for the platform's reasons (``Job.credit_platform_fault``)."""
        return self._job(job_id, None, lambda j: j.credit_platform_fault(attempt, reason, at))

    def mark_lost(self, job_id: str, last_heartbeat_at: datetime | None, at: datetime) -> JobView:
        return self._job(job_id, None, lambda j: j.mark_lost(last_heartbeat_at, at))

    def declare_lost(
        self,
        job_id: str,
        last_heartbeat_at: datetime | None,
        reason: str,
        at: datetime,
        *,
        expected_version: int,
    ) -> JobView:
        """The ledger found the job's attempt silent: lost (a platform fault: its GPU time past its last
        checkpoint is credited), then, in the same commit, ``stopped`` if a stop was asked for,
        ``paused`` if a pause was, else ``retrying`` the next attempt while its ``max_retries`` allow
        (``reason`` given), else ``failed``. Conflict (``version_conflict``) if it changed since
        ``expected_version``."""

        def lose(job: Job) -> None:
            asked = job.state
            job.mark_lost(last_heartbeat_at, at)
            if asked == JobState.STOPPING:
                job.mark_stopped(at)
                return
            if asked == JobState.PAUSING:
                job.mark_paused(at)
                return
            max_retries = job_policy(job.config).max_retries
            if may_retry(retries_used(job.attempt, job.resumed_attempts), max_retries):
                job.retry(job.attempt + 1, reason, at)
            else:
                job.mark_failed(f"{reason}; no retries left ({max_retries + 1} attempts)", at)

        return self._job(job_id, expected_version, lose)

    def get_job(self, job_id: str) -> JobView:
        return job_view(self._load(Job, job_id, "job_id"))

    def _job(self, job_id: str, expected_version: int | None, action: Callable[[Job], None]) -> JobView:
        return job_view(self._update(Job, job_id, "job_id", expected_version, action))

    # ---- models ----

    def delete_model(
        self,
        model_id: str,
        active_job_ids: Iterable[str],
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> ModelView:
        jobs = list(active_job_ids)
        return model_view(
            self._update(Model, model_id, "model_id", expected_version, lambda m: m.delete(at, jobs))
        )

    def get_model(self, model_id: str) -> ModelView:
        return model_view(self._load(Model, model_id, "model_id"))

    def _new_model(
        self, model_id: str, job_id: str, base_model: str, weights: ModelWeights, at: datetime
    ) -> Model:
        """Job ``job_id``'s ``weights`` as model ``model_id``, not saved yet; Conflict if the id is taken."""
        self._check_new(Model, model_id, "model_id")
        ids = {"model_id": model_id, "user_id": self.user_id, "job_id": job_id, "base_model": base_model}
        return Model.register(**ids, **asdict(weights), at=at)  # the weights' fields are the rest

    # ---- budget ----

    def set_budget(
        self,
        monthly_limit_usd_micros: int | None,
        at: datetime,
        *,
        thresholds_pct: Sequence[int] | None = None,
        expected_version: int | None = None,
    ) -> BudgetView:
        """Set (None: remove) the monthly limit and optionally the alert thresholds."""
        budget = self._budget_or_new(at)
        check_version(budget, expected_version, f"budget of {self.user_id}")
        budget.set_limit(monthly_limit_usd_micros, at, thresholds_pct)
        self._save(budget)
        return budget_view(budget)

    def get_budget(self) -> BudgetView:
        """The budget (no limit, default thresholds and version 0 if none was ever set)."""
        budget = self._find(Budget.create_id(self.user_id))
        if budget is None:
            return BudgetView(
                user_id=self.user_id,
                monthly_limit_usd_micros=None,
                thresholds_pct=list(DEFAULT_THRESHOLDS_PCT),
                alerts={},
                version=0,
            )
        return budget_view(budget)

    def _budget_or_new(self, at: datetime) -> Budget:
        budget = self._find(Budget.create_id(self.user_id))
        return Budget.create(self.user_id, at) if budget is None else budget

    # ---- API keys ----

    def create_api_key(self, name: str, at: datetime) -> tuple[ApiKeyInfo, str]:
        """A new API key named ``name``: its row and the key itself (shown once; only its hash is kept)."""
        ring = self._find(ApiKeys.create_id(self.user_id)) or ApiKeys.create(self.user_id, at)
        key_id, secret = new_id("key"), new_secret()
        info = ring.add_key(key_id, name, secret, at)
        self._save(ring)
        return info, format_key(self.user_id, key_id, secret)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        ring = self._find(ApiKeys.create_id(self.user_id))
        return [] if ring is None else ring.listed()

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyInfo:
        check_id(key_id, kind="key_id")
        ring = self._find(ApiKeys.create_id(self.user_id))
        if ring is None:
            raise NotFound(f"no key {key_id}", where="key_id")
        info = ring.revoke(key_id, at)
        self._save(ring)
        return info

    def accepts_api_key(self, key_id: str, secret: str) -> bool:
        """Whether ``secret`` is the secret of the user's active key ``key_id``."""
        ring = self._find(ApiKeys.create_id(self.user_id))
        return ring is not None and ring.accepts(key_id, secret)

    # ---- metering (the ledger) ----

    def meter_usage(
        self, job_ids: Iterable[str], plan: UsagePlan, at: datetime, *, copies: AggregateCache | None = None
    ) -> MeteringResult:
        """Record a batch of usage on several jobs, then the alerts and stops it makes due, in ONE commit.

        For each of ``job_ids`` the plan gives the runs to record (``plan.usage_runs``, asked of
        every job first; then ``plan.archive_runs`` names on them the archive they were metered
        from) and the heartbeats it refused to bill (``plan.rejected_heartbeats``: one
        ``HeartbeatsRejected`` each): a run the job refuses (already metered, an attempt that never
        started) is reported in ``refused``, an id that is no job of this user in
        ``unknown_job_ids``. Each run is capped as it is recorded (``Job.meter_usage``): by the
        job's ``max_cost`` and, with a monthly budget, by what the budget leaves the job in the
        run's period (the budget less the user's other jobs' net spend there: ``plan.period_spend``
        for the jobs not in hand, the aggregates for those in hand), so the user's net spend in a
        period never passes the budget. Then ``plan.limit_orders`` sees every job that took usage
        and the budget, and says which alerts to raise and which jobs (taking usage or not) to
        stop. Every job and the budget changed are saved together; nothing is saved when no usage
        and no rejection was recorded.

        ``copies``: the caller's own copies of the aggregates (the ledger's ``AggregateCache``),
        so busy jobs are not loaded afresh each call; a copy changed but not saved is discarded.
        Conflict (code ``version_conflict``) if another writer saved first: call again.
        """
        touched: list[DomainAggregate] = []
        try:
            return self._meter_usage(job_ids, plan, at, copies, touched)
        except BaseException:
            if copies is not None:
                copies.discard(self.user_id, touched)  # changed but not saved
            raise

    def _meter_usage(
        self,
        job_ids: Iterable[str],
        plan: UsagePlan,
        at: datetime,
        copies: AggregateCache | None,
        touched: list[DomainAggregate],
    ) -> MeteringResult:
        unknown: list[str] = []
        refused: list[RefusedRun] = []
        metered: list[Job] = []
        rejected = 0
        loaded: dict[str, Job] = {}
        for job_id in job_ids:
            try:
                job = self._copy(copies, Job, Job.create_id(check_id(job_id, kind="job_id")))
            except PlatformError:
                job = None
            if job is None:
                unknown.append(job_id)
            else:
                loaded[job.job_id] = job
        budget = self._copy(copies, Budget, Budget.create_id(self.user_id))
        rooms = _BudgetRooms(budget.monthly_limit_usd_micros if budget else None, plan, loaded)
        planned = {
            job.job_id: plan.usage_runs(
                job.job_id,
                job.attempt,
                job.metered_seq,
                gpu_count=job.gpu_count,
                gpu_type=job.gpu_type,
                attempts=job.attempts,
                meters=job.meters(),
            )
            for job in loaded.values()
        }
        planned = dict(plan.archive_runs(planned))
        for job in loaded.values():
            recorded = False
            for run in planned.get(job.job_id, ()):
                before = rooms.before(job, run.period)
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
                        period_room=rooms.room(job, run.period),
                        archive=run.archive,
                        archive_sha256=run.archive_sha256,
                        anchor_at=run.anchor_at,
                        anchor_ms=run.anchor_ms,
                    )
                except PlatformError as exc:
                    refused.append(RefusedRun(run, str(exc)))
                else:
                    rooms.after(job, run.period, before)
                    recorded = True
            for rejection in plan.rejected_heartbeats(job.job_id):
                job.reject_heartbeats(
                    rejection.attempt,
                    rejection.first_seq,
                    rejection.last_seq,
                    rejection.count,
                    rejection.reason,
                    at,
                )
                rejected += 1
            if recorded:
                metered.append(job)
            if job.pending_events:
                touched.append(job)
        if not metered:
            recordings = self._save(*touched) if touched else []  # rejections alone
            return MeteringResult(
                unknown_job_ids=unknown,
                refused=refused,
                rejected=rejected,
                events=len(recordings),
                first_position=recordings[0].notification.id if recordings else None,
                last_position=recordings[-1].notification.id if recordings else None,
            )
        touched.extend([budget] if budget is not None else [])
        orders = plan.limit_orders(
            [_metered_job(job) for job in metered], None if budget is None else budget_view(budget)
        )
        jobs = {job.job_id: job for job in metered}
        for alert in orders.job_alerts:
            jobs[alert.job_id].raise_alert(
                JOB_SCOPE, alert.threshold_pct, alert.spent_usd_micros, alert.limit_usd_micros, at
            )
        for budget_alert in orders.budget_alerts:
            if budget is None:
                raise Conflict(f"user {self.user_id} has no budget to alert on")
            budget.raise_alert(
                budget_alert.period, budget_alert.threshold_pct, budget_alert.spent_usd_micros, at
            )
        stops = 0
        for job_id in orders.stop_job_ids:
            job = jobs.get(job_id)
            if job is None:
                job = self._copy(copies, Job, Job.create_id(job_id))
                if job is None:
                    continue
                touched.append(job)
            if job.state in orders.stop_states:
                job.request_stop(orders.stop_reason, at)
                stops += 1
        changed = [a for a in touched if a.pending_events]
        events = sum(len(a.pending_events) for a in changed)
        plan.before_commit()
        recordings = self._save(*changed)
        return MeteringResult(
            unknown_job_ids=unknown,
            refused=refused,
            rejected=rejected,
            alerts=len(orders.job_alerts) + len(orders.budget_alerts),
            stops=stops,
            events=events,
            first_position=recordings[0].notification.id if recordings else None,
            last_position=recordings[-1].notification.id if recordings else None,
        )

    def meter_serving(
        self,
        lines: Mapping[str, Sequence[ServedLine]],
        at: datetime,
        *,
        spend_after: Callable[[Sequence[Any]], Mapping[str, int]] | None = None,
    ) -> ServingMetered:
        """Record completions served (``lines`` per billing period), then the budget alerts they make
        due, in ONE commit.

        ``spend_after(events)``: the user's net spend per period once ``events`` (the new
        ``ServingUsage.Metered``, not saved yet) are counted (the billing fold's totals, GPU time
        included); without it no alert is raised. Conflict (``version_conflict``) if another writer
        saved first: call again.
        """
        usage = self._find(ServingUsage.create_id(self.user_id))
        if not isinstance(usage, ServingUsage):
            usage = ServingUsage.create(self.user_id, at)
        for period in sorted(lines):
            if lines[period]:
                usage.meter(period, lines[period], at)
        metered = [e for e in usage.pending_events if isinstance(e, ServingUsage.Metered)]
        if not metered:
            return ServingMetered(events=0, alerts=0)
        changed: list[DomainAggregate] = [usage]
        alerts = 0
        budget = self._find(Budget.create_id(self.user_id))
        if spend_after is not None and isinstance(budget, Budget) and budget.monthly_limit_usd_micros:
            spent = spend_after(metered)
            for event in metered:
                for threshold in budget.alerts_due(event.period, spent.get(event.period, 0)):
                    budget.raise_alert(event.period, threshold, spent[event.period], at)
                    alerts += 1
            if budget.pending_events:
                changed.append(budget)
        events = sum(len(a.pending_events) for a in changed)
        self._save(*changed)
        return ServingMetered(events=events, alerts=alerts)

    def _copy(self, copies: AggregateCache | None, cls: type[A], aggregate_id: Any) -> A | None:
        """The aggregate as stored now, from ``copies`` if given; None if it is no ``cls``."""
        if copies is not None:
            return copies.get(self, self.user_id, cls, aggregate_id)
        found = self._find(aggregate_id)
        return found if isinstance(found, cls) else None


class _BudgetRooms:
    """What a monthly budget leaves each job in a period while a batch is metered: the limit less the
    net spend of the user's other jobs there (the jobs in hand from their aggregates, as they are
    metered; the rest as ``plan.period_spend`` knows them)."""

    def __init__(self, limit: int | None, plan: UsagePlan, jobs: Mapping[str, Job]) -> None:
        self.limit, self.plan, self.jobs = limit, plan, jobs
        self._others: dict[str, int | None] = {}  # period -> spend of the jobs not in hand
        self._in_hand: dict[str, int] = {}  # period -> net spend of the jobs in hand

    def before(self, job: Job, period: str) -> int:
        return job.net_cost_usd_micros(period) if self._known(period) else 0

    def room(self, job: Job, period: str) -> int | None:
        if not self._known(period):
            return None
        others = self._others[period]
        assert others is not None
        return self.limit - others - (self._in_hand[period] - job.net_cost_usd_micros(period))  # type: ignore[operator]

    def after(self, job: Job, period: str, before: int) -> None:
        if self._known(period):
            self._in_hand[period] += job.net_cost_usd_micros(period) - before

    def _known(self, period: str) -> bool:
        if self.limit is None:
            return False
        if period not in self._others:
            self._others[period] = self.plan.period_spend(period, exclude=self.jobs.keys())
            self._in_hand[period] = sum(j.net_cost_usd_micros(period) for j in self.jobs.values())
        return self._others[period] is not None


def _metered_job(job: Job) -> MeteredJob:
    return MeteredJob(
        job_id=job.job_id,
        attempt=job.attempt,
        state=job.state,
        cost_usd_micros=job.cost().cost_usd_micros,
        max_cost_usd_micros=job.max_cost_usd_micros,
        usage=job.usage,
        credited=job.credited,
        alerts=job.alerts,
        config=job.config,
        events=tuple(job.pending_events),
    )
