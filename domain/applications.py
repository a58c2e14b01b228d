"""The service layer: two eventsourcing Applications, one per kind of partition.

``PlatformApp`` (partition ``platform``) holds users, the email index, the price list and the
base-model catalogue. ``UserApp`` (partition ``users/<user_id>``) holds one user's datasets,
jobs, models and budget.

Every command is ``verb_noun(..., at)`` with the time passed in; it loads, acts, saves and
returns an id or a Struct from ``domain.read_models`` (never an aggregate). Refusals raise the
``domain.errors`` hierarchy and write nothing:

- unknown ids: ``NotFound`` (the library's ``AggregateNotFoundError`` re-raised as ours);
- impossible transitions, in-use objects, duplicates: ``Conflict``;
- ``expected_version`` (optional on updates) not matching the stored version, or another
  writer saving first: ``Conflict`` with code ``version_conflict``.

Persistence comes from the environment (eventsourcing's ``PERSISTENCE_MODULE``, and
``TUNE_PARTITION``, which defaults to ``platform/events/`` and ``users/<user_id>/events/``
(``domain.partitions``), the prefixes ``storage.eventstore`` expects); without it, in-memory POPO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, Recording
from eventsourcing.persistence import JSONTranscoder, RecordConflictError, Transcoder
from eventsourcing.utils import EnvType
from msgspec.structs import asdict

from domain.aggregate_cache import AggregateCache
from domain.base import DomainAggregate, check_utc
from domain.budget import DEFAULT_THRESHOLDS_PCT, Budget
from domain.catalogue import BaseModelCatalogue
from domain.dataset import Dataset
from domain.dataset_format import ValidationReport
from domain.errors import Conflict, NotFound, PlatformError
from domain.ids import check_id, new_id
from domain.job import Job, JobState
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
from domain.partitions import PLATFORM_EVENTS, USERS, user_events
from domain.pricing import DEFAULT_PRICES_USD_MICROS_PER_HOUR, PriceList
from domain.read_models import (
    BaseModelView,
    BudgetView,
    DatasetView,
    JobView,
    ModelView,
    PriceListView,
    PriceView,
    UserCredentials,
    UserView,
    base_model_views,
    budget_view,
    dataset_view,
    job_view,
    model_view,
    user_credentials,
    user_view,
)
from domain.transcoder import MsgspecJSONTranscoder
from domain.user import User, normalize_email
from domain.user_email import UserEmail

__all__ = ["PlatformApp", "UserApp"]

A = TypeVar("A", bound=DomainAggregate)


class _AggregateEvents(ProcessingEvent[Any]):
    """``ProcessingEvent`` that knows our aggregates without the library's runtime-Protocol checks.

    ``collect_events`` asks ``isinstance(obj, DomainEventProtocol)`` and then
    ``isinstance(obj, CollectEventsProtocol)`` of every object saved: on Python 3.11 each re-reads
    the protocol's members (~17 us), a tenth of a ledger commit of several jobs. Our aggregates
    are taken directly; anything else goes the library's way.
    """

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, DomainAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                others.append(obj)
        super().collect_events(*others, **kwargs)


class _PartitionApp(Application):
    """Loading by string id, expected versions and conflict mapping, shared by both apps."""

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[Any]]:
        """``Application.save`` (its steps, in its order) with ``_AggregateEvents`` collecting.

        Pinned to eventsourcing 9.5.6: ``tests/unit/domain/test_library_save.py`` fails when the
        library's ``save`` or ``collect_events`` change, so this copy is checked again."""
        processing_event = _AggregateEvents()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, still called by its save
        return recordings

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON format, parsed by msgspec (``domain.transcoder``) unless set otherwise."""
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = MsgspecJSONTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def _load(self, cls: type[A], key: str, kind: str) -> A:
        check_id(key, kind=kind)
        return self._load_id(cls, cls.create_id(key), f"no {kind.removesuffix('_id')} {key}", kind)

    def _load_id(self, cls: type[A], aggregate_id: Any, missing: str, where: str | None) -> A:
        aggregate = self._find(aggregate_id)
        if not isinstance(aggregate, cls):  # None, or (ids are namespaced by kind) never another kind
            raise NotFound(missing, where=where)
        return aggregate

    def _find(self, aggregate_id: Any) -> Any | None:
        """The aggregate, or None if it was never created."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _exists(self, cls: type[DomainAggregate], *key: str) -> bool:
        return cls.create_id(*key) in self.repository

    def _check_new(self, cls: type[DomainAggregate], key: str, kind: str) -> None:
        """Refuse ``key`` unless it is a valid id no ``cls`` has yet (Conflict: it already exists)."""
        check_id(key, kind=kind)
        if self._exists(cls, key):
            raise Conflict(f"{kind.removesuffix('_id')} {key} already exists", where=kind)

    def _update(
        self, cls: type[A], key: str, kind: str, expected_version: int | None, action: Callable[[A], None]
    ) -> A:
        aggregate = self._load(cls, key, kind)
        _check_version(aggregate, expected_version, f"{kind.removesuffix('_id')} {key}")
        action(aggregate)
        self._save(aggregate)
        return aggregate

    def _save(self, *aggregates: DomainAggregate) -> list[Recording[Any]]:
        try:
            return self.save(*aggregates)
        except RecordConflictError:
            raise Conflict(
                "another write reached this object first; reload it and try again", code="version_conflict"
            ) from None


def _check_version(aggregate: DomainAggregate, expected_version: int | None, what: str) -> None:
    """``expected_version`` is the stored version (0: not created yet); pending events do not count."""
    stored = aggregate.version - len(aggregate.pending_events)
    if expected_version is not None and stored != expected_version:
        raise Conflict(
            f"{what} is at version {stored}, not {expected_version}: it changed meanwhile",
            where="expected_version",
            code="version_conflict",
        )


class PlatformApp(_PartitionApp):
    """Users, the email index, the price list and the base-model catalogue.

    Commands: ``register_user``, ``record_login``, ``change_password``, ``suspend_user``,
    ``revoke_tokens``, ``reactivate_user``, ``set_quota``, ``set_price``, ``ensure_default_prices``,
    ``add_base_model``, ``remove_base_model``, ``ensure_base_models``.
    Queries: ``get_user``, ``find_user_by_email``, ``get_credentials``, ``price_at``,
    ``price_list``, ``base_models``, ``get_base_model``.
    """

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__({"TUNE_PARTITION": PLATFORM_EVENTS, **(env or {})})

    # ---- users ----

    def register_user(
        self, email: str, password_hash: str, role: str, at: datetime, *, user_id: str | None = None
    ) -> str:
        """A new active user; Conflict if the email (case-insensitive) or the id is taken."""
        email = normalize_email(email)
        user_id = user_id or new_id("usr")
        if self._exists(UserEmail, email):
            raise Conflict(f"email {email} is already registered", where="email", code="email_taken")
        self._check_new(User, user_id, "user_id")
        user = User.register(user_id=user_id, email=email, password_hash=password_hash, role=role, at=at)
        claim = UserEmail.claim(email=email, user_id=user_id, at=at)
        self._save(user, claim)
        return user_id

    def record_login(self, user_id: str, at: datetime) -> UserView:
        """Forbidden (code ``suspended``) for a suspended user."""
        return self._user(user_id, None, lambda u: u.record_login(at))

    def change_password(
        self, user_id: str, password_hash: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.change_password(password_hash, at))

    def suspend_user(
        self, user_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.suspend(reason, at))

    def revoke_tokens(
        self, user_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        """Every token issued to the user until now is refused (suspend and change_password do it too)."""
        return self._user(user_id, expected_version, lambda u: u.revoke_tokens(reason, at))

    def reactivate_user(self, user_id: str, at: datetime, *, expected_version: int | None = None) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.reactivate(at))

    def set_quota(
        self,
        user_id: str,
        max_concurrent_jobs: int,
        max_dataset_bytes: int,
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> UserView:
        return self._user(
            user_id, expected_version, lambda u: u.set_quota(max_concurrent_jobs, max_dataset_bytes, at)
        )

    def get_user(self, user_id: str) -> UserView:
        return user_view(self._load(User, user_id, "user_id"))

    def find_user_by_email(self, email: str) -> UserView | None:
        user = self._user_by_email(email)
        return None if user is None else user_view(user)

    def get_credentials(self, email: str) -> UserCredentials | None:
        """The password hash and status for a login check (None if no such email)."""
        user = self._user_by_email(email)
        return None if user is None else user_credentials(user)

    def _user_by_email(self, email: str) -> User | None:
        claim = self._find(UserEmail.create_id(normalize_email(email)))
        return None if claim is None else self._load(User, claim.user_id, "user_id")

    def _user(self, user_id: str, expected_version: int | None, action: Callable[[User], None]) -> UserView:
        return user_view(self._update(User, user_id, "user_id", expected_version, action))

    # ---- prices ----

    def set_price(
        self, gpu_type: str, usd_micros_per_hour: int, effective_at: datetime, at: datetime
    ) -> PriceView:
        """From ``effective_at`` on, one ``gpu_type`` GPU costs ``usd_micros_per_hour`` an hour.

        ``effective_at`` is ``at`` or later: a price is never set in the past (ValidationFailed).
        """
        price_list = self._price_list_or_new(at)
        price_list.set_price(gpu_type, usd_micros_per_hour, effective_at, at)
        self._save(price_list)
        return PriceView(
            gpu_type=gpu_type, usd_micros_per_hour=usd_micros_per_hour, effective_at=check_utc(effective_at)
        )

    def ensure_default_prices(self, at: datetime, *, effective_at: datetime | None = None) -> list[str]:
        """Price every default GPU type that has no price yet (from ``effective_at``, default ``at``).

        Returns the GPU types priced now; a second call adds nothing.
        """
        price_list = self._price_list_or_new(at)
        added = [t for t in DEFAULT_PRICES_USD_MICROS_PER_HOUR if t not in price_list.prices]
        for gpu_type in added:
            price_list.set_price(
                gpu_type, DEFAULT_PRICES_USD_MICROS_PER_HOUR[gpu_type], effective_at or at, at
            )
        if price_list.pending_events:
            self._save(price_list)
        return added

    def price_at(self, gpu_type: str, t: datetime) -> int:
        """Micro-dollars per GPU-hour in force at ``t``; NotFound if ``gpu_type`` had no price then."""
        return self._price_list().price_at(gpu_type, t)

    def price_list(self, at: datetime) -> PriceListView:
        """Prices in force at ``at`` and changes scheduled after it."""
        at = check_utc(at)
        prices: dict[str, PriceView] = {}
        scheduled: list[PriceView] = []
        for gpu_type, effective_at, micros in self._price_list().entries():
            view = PriceView(gpu_type=gpu_type, usd_micros_per_hour=micros, effective_at=effective_at)
            if effective_at <= at:
                prices[gpu_type] = view
            else:
                scheduled.append(view)
        return PriceListView(at=at, prices=[prices[t] for t in sorted(prices)], scheduled=scheduled)

    def _price_list(self) -> PriceList:
        return self._load_id(PriceList, PriceList.create_id(), "no prices are set yet", "gpu_type")

    def _price_list_or_new(self, at: datetime) -> PriceList:
        try:
            return self._price_list()
        except NotFound:
            return PriceList.create(at)

    # ---- base models ----

    def add_base_model(
        self, name: str, source_kind: str, source: str, at: datetime, *, chat_template: bool = True
    ) -> BaseModelView:
        catalogue = self._catalogue_or_new(at)
        catalogue.add(name, source_kind, source, at, chat_template=chat_template)
        self._save(catalogue)
        return next(v for v in base_model_views(catalogue) if v.name == name)

    def ensure_base_models(self, entries: Iterable[tuple[str, str, str]], at: datetime) -> list[str]:
        """Add each ``(name, source_kind, source)`` not in the catalogue yet; returns the names added."""
        catalogue = self._catalogue_or_new(at)
        added = []
        for name, source_kind, source in entries:
            if name not in catalogue.models:
                catalogue.add(name, source_kind, source, at)
                added.append(name)
        if catalogue.pending_events:
            self._save(catalogue)
        return added

    def remove_base_model(self, name: str, at: datetime) -> None:
        catalogue = self._load_id(
            BaseModelCatalogue, BaseModelCatalogue.create_id(), f"no base model {name!r}", "base_model"
        )
        catalogue.remove(name, at)
        self._save(catalogue)

    def base_models(self) -> list[BaseModelView]:
        catalogue = self._find(BaseModelCatalogue.create_id())
        return [] if catalogue is None else base_model_views(catalogue)

    def get_base_model(self, name: str) -> BaseModelView:
        for view in self.base_models():
            if view.name == name:
                return view
        raise NotFound(f"no base model {name!r}", where="base_model")

    def _catalogue_or_new(self, at: datetime) -> BaseModelCatalogue:
        catalogue = self._find(BaseModelCatalogue.create_id())
        return BaseModelCatalogue.create(at) if catalogue is None else catalogue


class UserApp(_PartitionApp):
    """One user's datasets, jobs, models and budget (partition ``users/<user_id>``).

    ``UserApp(user_id, env=None)``; without ``user_id`` it is read from ``TUNE_USER_ID`` or a
    ``TUNE_PARTITION`` of the form ``users/<user_id>/events/`` (the default partition).

    Datasets: ``upload_dataset``, ``validate_dataset``, ``reject_dataset``, ``delete_dataset``,
    ``get_dataset``. Jobs: ``submit_job``, ``queue_job``, ``start_job``, ``report_progress``,
    ``save_checkpoint``, ``request_stop``, ``mark_stopped``, ``mark_succeeded`` (registers the
    model), ``mark_failed``, ``retry_job``, ``mark_lost``, ``declare_lost``, ``get_job``. Models:
    ``delete_model``, ``get_model``. Budget: ``set_budget``, ``get_budget``. The ledger:
    ``meter_usage`` (usage, alerts and stops of many jobs in one commit).
    """

    snapshotting_intervals = {Job: 200}

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
    ) -> str:
        """A new ``submitted`` job; Conflict unless ``dataset_id`` is validated. Returns the job id."""
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
        )
        self._save(job)
        return job_id

    def queue_job(self, job_id: str, at: datetime, *, expected_version: int | None = None) -> JobView:
        return self._job(job_id, expected_version, lambda j: j.queue(at))

    def start_job(
        self, job_id: str, attempt: int, at: datetime, *, expected_version: int | None = None
    ) -> JobView:
        return self._job(job_id, expected_version, lambda j: j.start(attempt, at))

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
    ) -> JobView:
        return self._job(
            job_id, None, lambda j: j.report_progress(attempt, step, total_steps, epoch, loss, tokens, at)
        )

    def report_activity(self, job_id: str, attempt: int, activity: str | None, at: datetime) -> JobView:
        return self._job(job_id, None, lambda j: j.report_activity(attempt, activity, at))

    def save_checkpoint(self, job_id: str, attempt: int, step: int, path: str, at: datetime) -> JobView:
        return self._job(job_id, None, lambda j: j.save_checkpoint(attempt, step, path, at))

    def request_stop(
        self, job_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> JobView:
        """Running: -> ``stopping``; submitted/queued/retrying/lost: -> ``stopped`` at once."""
        return self._job(job_id, expected_version, lambda j: j.request_stop(reason, at))

    def mark_stopped(
        self, job_id: str, at: datetime, *, step: int | None = None, reason: str | None = None
    ) -> JobView:
        return self._job(job_id, None, lambda j: j.mark_stopped(at, step=step, reason=reason))

    def mark_succeeded(
        self,
        job_id: str,
        at: datetime,
        *,
        metrics: Mapping[str, Any] | None = None,
        weights: ModelWeights | None = None,
    ) -> JobView:
        """The job succeeded; with ``weights``, its model is registered in the same save (atomic)."""
        job = self._load(Job, job_id, "job_id")
        model = None
        if weights is not None:
            model = self._new_model(job.model_id, job.job_id, job.base_model, weights, at)
        job.mark_succeeded(at, metrics=dict(metrics or {}))
        self._save(job, *([model] if model else []))
        return job_view(job)

    def mark_failed(self, job_id: str, error: str, at: datetime) -> JobView:
        return self._job(job_id, None, lambda j: j.mark_failed(error, at))

    def retry_job(self, job_id: str, attempt: int, reason: str, at: datetime) -> JobView:
        return self._job(job_id, None, lambda j: j.retry(attempt, reason, at))

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
        """The ledger found the job's attempt silent: lost, then, in the same commit, ``stopped`` if a
        stop was asked for, else ``retrying`` the next attempt while its ``max_retries`` allow
        (``reason`` given), else ``failed``. Conflict (``version_conflict``) if it changed since
        ``expected_version``."""

        def lose(job: Job) -> None:
            stopping = job.state == JobState.STOPPING
            job.mark_lost(last_heartbeat_at, at)
            if stopping:
                job.mark_stopped(at)
                return
            max_retries = job_policy(job.config).max_retries
            if may_retry(job.attempt, max_retries):
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
        _check_version(budget, expected_version, f"budget of {self.user_id}")
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

    # ---- metering (the ledger) ----

    def meter_usage(
        self, job_ids: Iterable[str], plan: UsagePlan, at: datetime, *, copies: AggregateCache | None = None
    ) -> MeteringResult:
        """Record a batch of usage on several jobs, then the alerts and stops it makes due, in ONE commit.

        For each of ``job_ids`` the plan gives the runs to record (``plan.usage_runs``): a run the
        job refuses (already metered, an attempt that never started) is reported in ``refused``,
        an id that is no job of this user in ``unknown_job_ids``. Then ``plan.limit_orders`` sees
        every job that took usage and the budget, and says which alerts to raise and which jobs
        (taking usage or not) to stop. Every job and the budget changed are saved together;
        nothing is saved when no usage was recorded.

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
        for job_id in job_ids:
            try:
                job = self._copy(copies, Job, Job.create_id(check_id(job_id, kind="job_id")))
            except PlatformError:
                job = None
            if job is None:
                unknown.append(job_id)
                continue
            recorded = False
            for run in plan.usage_runs(job.job_id, job.attempt, job.metered_seq, gpu_count=job.gpu_count):
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
                    refused.append(RefusedRun(run, str(exc)))
                else:
                    recorded = True
            if recorded:
                metered.append(job)
                touched.append(job)
        if not metered:
            return MeteringResult(unknown_job_ids=unknown, refused=refused)
        budget = self._copy(copies, Budget, Budget.create_id(self.user_id))
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
        recordings = self._save(*changed)
        return MeteringResult(
            unknown_job_ids=unknown,
            refused=refused,
            alerts=len(orders.job_alerts) + len(orders.budget_alerts),
            stops=stops,
            events=events,
            first_position=recordings[0].notification.id if recordings else None,
            last_position=recordings[-1].notification.id if recordings else None,
        )

    def _copy(self, copies: AggregateCache | None, cls: type[A], aggregate_id: Any) -> A | None:
        """The aggregate as stored now, from ``copies`` if given; None if it is no ``cls``."""
        if copies is not None:
            return copies.get(self, self.user_id, cls, aggregate_id)
        found = self._find(aggregate_id)
        return found if isinstance(found, cls) else None


def _metered_job(job: Job) -> MeteredJob:
    return MeteredJob(
        job_id=job.job_id,
        attempt=job.attempt,
        state=job.state,
        cost_usd_micros=job.cost().cost_usd_micros,
        max_cost_usd_micros=job.max_cost_usd_micros,
        usage=job.usage,
        alerts=job.alerts,
        config=job.config,
        events=tuple(job.pending_events),
    )
