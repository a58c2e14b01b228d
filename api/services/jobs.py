"""Jobs: start (config checked whole first), status, list, stop, pause, resume, history, logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import msgspec
import yaml

from api import schemas
from api.services.base import UserService
from api.services.billing import BillingService
from api.services.checkpoints import checkpoint_list
from api.services.estimates import EstimateService
from api.services.hardware import HardwareService
from api.services.pages import EVERY, Listing, PageRequest, Pages
from api.services.start_points import StartPointFound, find_start_point
from api.streams import follow_object, tail_lines
from domain.admission import check_admission
from domain.config_yaml import config_from_yaml
from domain.dataset_format import check_dataset_fits
from domain.errors import NotFound, PlatformError, Problems, ValidationFailed
from domain.ids import check_id
from domain.job import Job
from domain.job_states import ACTIVE_STATES, TERMINAL_STATES, JobState
from domain.money import dollars, dollars_or_none
from domain.training_config import TrainingConfig, parse_training_config, training_config_to_dict
from projections.index import Query
from projections.render import iso
from storage import ObjectNotFound, layout

_SHOWN_ALWAYS = ("charged", "charged_usd_micros", "credited", "credited_usd_micros", "credited_gpu_ms")
"""What a job's cost report shows even with no credits (``status.json`` only once there are)."""

__all__ = ["JobService"]

A = TypeVar("A")
R = TypeVar("R")

_HIDDEN_FIELDS = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp", "at"})


JOBS = Listing("jobs", schemas.JobRow, "job_id", layout.jobs, schemas.JobList, "jobs")


class JobService(UserService):
    """The caller's jobs."""

    # -- reads -------------------------------------------------------------------------------

    def status(self, job_id: str) -> schemas.JobStatus:
        """The job's view; a job that ended without a model that answers (stopped before its first
        checkpoint, failed, or its model deleted) shows no ``model_id``."""
        status = self.object_view(layout.job_status, "job", job_id, schemas.JobStatus)
        if self._model_gone(status.status, status.model_id):
            status = msgspec.structs.replace(status, model_id=None)
        return status

    def _model_gone(self, state: str, model_id: str | None) -> bool:
        """Whether a job in ``state`` names a ``model_id`` that answers 404 (so it must not be shown).

        The stored views keep the id the job was submitted with (old histories read as they
        always did); the replies hide it."""
        return state in TERMINAL_STATES and bool(model_id) and not self._has_model(model_id or "")

    def _has_model(self, model_id: str) -> bool:
        model = self.rt.view_json(layout.model_metadata(self.user_id, model_id))
        return model is not None and model.get("status") != "deleted"

    def list(
        self, request: PageRequest = EVERY, state: str | None = None, base_model: str | None = None
    ) -> schemas.JobList:
        """A page of the caller's jobs (``api.services.pages``), or all of them without paging."""
        if state is not None and state not in frozenset(JobState):
            raise ValidationFailed(
                f"unknown state {state!r:.40}; one of {', '.join(sorted(JobState))}", where="state"
            )
        reply = self.pages.reply(request, state=state, base_model=base_model)
        return msgspec.structs.replace(reply, jobs=[self._shown(row) for row in reply.jobs])

    def _shown(self, row: schemas.JobRow) -> schemas.JobRow:
        """The row as the caller sees it: no ``model_id`` where ``status`` would show none."""
        if self._model_gone(row.status, row.model_id):
            return msgspec.structs.replace(row, model_id=None)
        return row

    @property
    def pages(self) -> Pages:
        return Pages(self.rt, self.user_id, JOBS)

    def active_job_ids(self, *, dataset_id: str | None = None, base_model: str | None = None) -> list[str]:
        """Ids of the caller's active jobs (``ACTIVE_STATES``: paused ones too, a resume needs their data)
        that use this model, or this dataset to train on or as their validation dataset (only the index
        pages holding a job in an active state are read, and the config of each active job on another
        training dataset)."""
        pages = self.pages
        active = [
            job
            for state in sorted(ACTIVE_STATES)
            for job in pages.every(Query(limit=1, state=state, base_model=base_model))
        ]
        return [
            job.job_id
            for job in active
            if dataset_id is None
            or job.dataset_id == dataset_id
            or self._validates_on(job.job_id, dataset_id)
        ]

    def _validates_on(self, job_id: str, dataset_id: str) -> bool:
        """Whether the job's config names ``dataset_id`` as its validation dataset."""
        return bool(self.app.get_job(job_id).config.get("validation_dataset_id") == dataset_id)

    def events(self, job_id: str) -> schemas.JobEvents:
        """The job's history, oldest first, from its own stored events."""
        self.status(job_id)  # 404 unless it is the caller's
        history = self.app.events.get(Job.create_id(job_id))
        return schemas.JobEvents(job_id=job_id, events=[_job_event(e) for e in history])

    def checkpoints(self, job_id: str) -> schemas.CheckpointList:
        """The job's checkpoints with the losses at their step (``api.services.checkpoints``)."""
        return checkpoint_list(self.rt.bucket, self.user_id, self.status(job_id))

    def cost(self, job_id: str) -> schemas.JobCostReport:
        """What one job has cost so far, and in which months."""
        status = self.status(job_id)
        rows = [
            msgspec.structs.replace(row, period=period.period)
            for period in BillingService(self.rt, self.user_id).periods()
            for row in period.jobs
            if row.job_id == job_id
        ]
        credited = status.credited_usd_micros or 0
        charged = status.cost_usd_micros + credited
        shared = {
            name: value
            for name, value in msgspec.structs.asdict(status).items()
            if name in schemas.JobCostReport.__struct_fields__ and name not in _SHOWN_ALWAYS
        }
        return schemas.JobCostReport(
            **shared,
            periods=rows,
            charged=dollars(charged),
            charged_usd_micros=charged,
            credited=dollars(credited),
            credited_usd_micros=credited,
            credited_gpu_ms=status.credited_gpu_ms or 0,
        )

    # -- writes ------------------------------------------------------------------------------

    def start(self, request: schemas.StartJobRequest) -> schemas.StartJobResponse:
        """Check everything, then submit (unless ``dry_run``).

        ``start_from`` (a checkpoint or model of the caller's: ``api.services.start_points``) is found
        first: a config that sets no ``method`` or ``lora`` takes its start point's.

        The config (whole), the base model, the dataset and the GPU type's price are all checked
        before anything is refused, and every problem is reported at once: one problem is raised as
        itself (a missing dataset stays a 404), several as one ``Problems`` (400) naming each.
        The dataset's format against the config's ``objective`` (422 naming both), the hardware on
        offer (422 naming what exists), the quota and the budget are asked only of a request with
        nothing else wrong.
        """
        problems = _Collected()
        raw = problems.check(_config_mapping, request.config)
        start = None if request.start_from is None else problems.check(self._start_point, request.start_from)
        if start is not None and raw is not None:
            raw = start.inherit(raw)  # a config that sets no method or lora takes the start point's
        config = problems.check(parse_training_config, raw) if raw is not None else None  # None: bad YAML
        base_model = problems.check(self._check_base_model, request.base_model)
        if start is not None and config is not None and base_model is not None:
            problems.check(lambda point: point.check_fits(base_model, config), start)
        dataset = problems.check(self._usable_dataset, request.dataset_id)
        if config is not None and config.validation_dataset_id is not None and dataset is not None:
            problems.check(self._usable_validation, (config.validation_dataset_id, dataset))
        gpu_type = _gpu_type(config, raw, problems)
        price = problems.check(self._price, gpu_type) if gpu_type is not None else None
        obtainable = problems.check(self.rt.check_base_model_obtainable, base_model) if base_model else None
        problems.raise_all(subject="start request")
        assert config is not None and base_model is not None and dataset is not None and price is not None
        check_dataset_fits(config.objective, dataset.format, dataset_id=dataset.dataset_id)  # 422
        HardwareService(self.rt).check_offered(config.gpu_type, config.gpu_count)  # 422: no backend has it
        dataset_id = dataset.dataset_id
        estimates = EstimateService(self.rt, self.user_id)
        estimate = estimates.estimate(config, base_model, dataset, price, self.pages)
        limits = self._check_limits(config, estimate.high_usd_micros, force=request.force)
        warnings = [*(obtainable or []), *limits]
        reply = schemas.StartJobResponse(
            status="dry_run" if request.dry_run else "submitted",
            dry_run=request.dry_run,
            base_model=base_model,
            dataset_id=dataset_id,
            gpu_type=config.gpu_type,
            gpu_count=config.gpu_count,
            estimate=dollars_or_none(estimate.usd_micros),
            estimate_usd_micros=estimate.usd_micros,
            estimate_low_usd_micros=estimate.low_usd_micros,
            estimate_high_usd_micros=estimate.high_usd_micros,
            estimate_source=estimate.source,
            estimate_basis=estimate.basis,
            estimate_steps=estimate.steps,
            estimate_tokens=estimate.tokens,
            max_cost=dollars_or_none(config.max_cost_usd_micros),
            max_cost_usd_micros=config.max_cost_usd_micros,
            config=training_config_to_dict(config),
            warnings=warnings,
            start_from=None if start is None else start.point,
        )
        if request.dry_run:
            return reply
        job_id = self.app.submit_job(
            base_model=base_model,
            dataset_id=dataset_id,
            config=reply.config,
            gpu_type=config.gpu_type,
            gpu_count=config.gpu_count,
            max_cost_usd_micros=config.max_cost_usd_micros,
            estimate_usd_micros=estimate.usd_micros,
            at=self.rt.clock(),
            start_from=None if start is None else msgspec.to_builtins(start.point),
        )
        self._write_config(job_id, reply.config)
        self.committed()
        self.rt.notify_job_submitted(self.user_id, job_id)
        status = self.status(job_id)
        return msgspec.structs.replace(reply, job_id=job_id, model_id=status.model_id, status=status.status)

    def stop(self, job_id: str, reason: str = "stopped by the user") -> schemas.StopJobResponse:
        self.status(job_id)
        self.app.request_stop(job_id, reason=reason, at=self.rt.clock())
        self.committed()
        return schemas.StopJobResponse(job_id=job_id, status=self.status(job_id).status)

    def pause(self, job_id: str) -> schemas.StopJobResponse:
        """Pause the job: a running one checkpoints and ends its attempt (``pausing``, then ``paused``);
        one with nothing running is ``paused`` at once. 409 once it has ended or is pausing/paused."""
        self.status(job_id)
        self.app.request_pause(job_id, at=self.rt.clock())
        self.committed()
        return schemas.StopJobResponse(job_id=job_id, status=self.status(job_id).status)

    def resume(self, job_id: str) -> schemas.StopJobResponse:
        """Queue a paused job again: its next attempt resumes from the checkpoint the pause saved
        (none: from the start). 409 unless it is paused."""
        self.status(job_id)
        self.app.resume_job(job_id, at=self.rt.clock())
        self.committed()
        self.rt.notify_job_submitted(self.user_id, job_id)
        return schemas.StopJobResponse(job_id=job_id, status=self.status(job_id).status)

    # -- logs --------------------------------------------------------------------------------

    def log_objects(self, job_id: str, attempts: int) -> list[str]:
        """The objects that make up a job's log, in order: the single ``job.log`` of a job run before
        attempts had prefixes, then each attempt's own (``attempts/<n>/job.log``)."""
        return [
            layout.job_log(self.user_id, job_id),
            *(layout.attempt_log(self.user_id, job_id, n) for n in range(1, attempts + 1)),
        ]

    def log_tail(self, job_id: str, lines: int | None) -> tuple[bytes, int]:
        """The last ``lines`` lines of the job's log (all of it when None) and the log's size so far."""
        names = self.log_objects(job_id, self.status(job_id).attempt)
        try:
            if lines is None:
                data = b"".join(self._read_or_empty(name) for name in names)
                return data, len(data)
            return tail_lines(self.rt.bucket, names, lines)
        except ObjectNotFound:
            return b"", 0

    def follow_log(self, job_id: str, offset: int) -> AsyncIterator[bytes]:
        """What is appended to the job's log after ``offset``, until the job ends (a later attempt's
        log follows its predecessors')."""
        attempts = [0]

        def finished() -> bool:
            try:
                status = self.status(job_id)
            except NotFound:
                return True
            attempts[0] = status.attempt
            return status.status in TERMINAL_STATES

        return follow_object(
            self.rt.bucket, lambda: self.log_objects(job_id, attempts[0]), offset=offset, finished=finished
        )

    def _read_or_empty(self, name: str) -> bytes:
        try:
            return self.rt.bucket.read(name)
        except ObjectNotFound:
            return b""

    # -- checks ------------------------------------------------------------------------------

    def _start_point(self, ref: str) -> StartPointFound:
        return find_start_point(self, ref)

    def _check_base_model(self, name: str) -> str:
        name = check_id(name, kind="base_model")
        known = self.rt.base_model_names()
        if name not in known:
            raise ValidationFailed(
                f"unknown base model {name!r}; available: {', '.join(sorted(known)) or 'none'}",
                where="base_model",
            )
        return name

    def _usable_dataset(self, dataset_id: str) -> schemas.Dataset:
        dataset_id = check_id(dataset_id, kind="dataset_id")
        dataset = self.object_view(layout.dataset_metadata, "dataset", dataset_id, schemas.Dataset)
        if dataset.status != "validated":
            raise ValidationFailed(
                f"dataset {dataset_id} is {dataset.status}; only a validated dataset can be trained on",
                where="dataset_id",
            )
        return dataset

    def _usable_validation(self, of: tuple[str, schemas.Dataset]) -> schemas.Dataset:
        """The validation dataset a config names: the caller's (404 otherwise), validated, another
        dataset than the training one, in its format (400 naming ``validation_dataset_id``)."""
        dataset_id, training = of
        where = "validation_dataset_id"
        try:
            found = self._usable_dataset(dataset_id)
        except (NotFound, ValidationFailed) as exc:
            raise type(exc)(f"validation dataset: {exc.message}", where=where) from None
        if found.dataset_id == training.dataset_id:
            raise ValidationFailed(
                "the validation dataset is the training dataset: its loss would measure nothing the training"
                " loss does not (use another dataset, or validation_split to hold out part of this one)",
                where=where,
            )
        if found.format != training.format:
            raise ValidationFailed(
                f"validation dataset {dataset_id} is in the {found.format} format, the training dataset"
                f" {training.dataset_id} in {training.format}: they must be in the same one",
                where=where,
            )
        return found

    def _price(self, gpu_type: str) -> int:
        pricing = self.rt.view_or(layout.pricing(), schemas.Pricing, schemas.Pricing())
        price = pricing.prices.get(gpu_type)
        if price is None:
            priced = ", ".join(sorted(pricing.prices)) or "none yet (an operator sets prices)"
            raise ValidationFailed(f"no price for GPU type {gpu_type!r}; priced: {priced}", where="gpu_type")
        return price.usd_micros_per_hour

    def _check_limits(self, config: TrainingConfig, estimate_usd_micros: int, *, force: bool) -> list[str]:
        """The domain's admission rule on the caller's quota, active jobs and this month's budget."""
        return check_admission(
            active_jobs=len(self.active_job_ids()),
            max_concurrent_jobs=self.rt.quota(self.user_id).max_concurrent_jobs,
            estimate_usd_micros=estimate_usd_micros,
            max_cost_usd_micros=config.max_cost_usd_micros,
            remaining_usd_micros=BillingService(self.rt, self.user_id).usage().remaining_usd_micros,
            force=force,
        )

    def _write_config(self, job_id: str, config: dict[str, Any]) -> None:
        text = yaml.safe_dump(config, sort_keys=True).encode()
        self.rt.bucket.write(layout.job_config(self.user_id, job_id), text)


class _Collected:
    """The problems of one request, gathered check by check and raised together."""

    def __init__(self) -> None:
        self.errors: list[PlatformError] = []

    def check(self, check: Callable[[A], R], value: A) -> R | None:
        """``check(value)``, or None with its problem kept (a bad value or a missing object)."""
        try:
            return check(value)
        except (ValidationFailed, NotFound) as exc:
            self.errors.append(exc)
            return None

    def named(self, where: str) -> bool:
        """Whether a problem kept so far is about ``where``."""
        return any(p.where == where for error in self.errors for p in Problems.of(error))

    def raise_all(self, *, subject: str) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise Problems((p for error in self.errors for p in Problems.of(error)), subject=subject)


def _config_mapping(raw: dict[str, Any] | str | None) -> dict[str, Any]:
    """The config as sent, as a mapping (YAML text read; none at all is ``{}``: every default)."""
    if isinstance(raw, str):
        return config_from_yaml(raw, where="config", at_line=lambda line: f"config line {line}")
    return {} if raw is None else raw


def _gpu_type(config: TrainingConfig | None, raw: Any, problems: _Collected) -> str | None:
    """The GPU type to price: the config's, or, in a config refused for other keys, the one it names
    (None where the config says nothing usable about it: there is nothing to price)."""
    if config is not None:
        return config.gpu_type
    if not isinstance(raw, Mapping) or problems.named("gpu_type"):
        return None
    gpu_type = raw.get("gpu_type", TrainingConfig().gpu_type)
    return gpu_type if isinstance(gpu_type, str) else None


def _job_event(event: Any) -> schemas.JobEvent:
    kind = type(event).__name__
    data = {k: v for k, v in msgspec.to_builtins(vars(event)).items() if k not in _HIDDEN_FIELDS}
    return schemas.JobEvent(
        seq=int(getattr(event, "originator_version", 0)),
        at=iso(getattr(event, "at", None)),
        type=kind,
        summary=_summary(kind, data),
        data=data,
    )


def _progress(d: dict[str, Any]) -> str:
    total = f"/{d['total_steps']}" if d.get("total_steps") else ""
    loss = f" loss {d['loss']:.4g}" if isinstance(d.get("loss"), int | float) else ""
    return f"step {d.get('step')}{total}{loss}"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ProgressReported": _progress,
    "CheckpointSaved": lambda d: f"checkpoint at step {d.get('step')}",
    "ActivityReported": lambda d: str(d.get("activity") or "activity done"),
    "UsageMetered": lambda d: f"{d.get('gpu_ms')} ms on {d.get('gpu_count')}x {d.get('gpu_type')}",
    "AlertRaised": lambda d: f"{d.get('scope')} alert at {d.get('threshold_pct')}%",
    "StopRequested": lambda d: str(d.get("reason") or "StopRequested"),
    "Stopped": lambda d: str(d.get("reason") or "Stopped"),
    "Retrying": lambda d: str(d.get("reason") or "Retrying"),
    "Failed": lambda d: str(d.get("error") or "failed"),
    "Started": lambda d: f"attempt {d.get('attempt')} started",
    "Submitted": lambda d: f"{d.get('base_model')} on {d.get('dataset_id')}",
}
"""One line about an event of each kind, from its data; other kinds are named as they are."""


def _summary(kind: str, d: dict[str, Any]) -> str:
    summarize = _SUMMARIES.get(kind)
    return summarize(d) if summarize else kind
