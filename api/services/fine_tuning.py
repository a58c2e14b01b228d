"""OpenAI-compatible fine-tuning: the caller's datasets as OpenAI files, their jobs as OpenAI jobs.

A thin translation over ``DatasetService`` and ``JobService``: one job, two doors. A file is a
dataset (its id is the ``dataset_id``; uploaded, validated line by line and deleted as at
``/datasets``); a job created here is submitted by ``JobService.start`` like one from
``/fine-tune/{user}/start`` and shows there, in the CLI and here alike. What a create request
asks that the training config does not hold (``suffix``, ``metadata``) is kept beside the
config (``storage.layout.job_openai``); the hyperparameters and seed a job reports are read back
from its config, so a job started at ``/fine-tune`` answers here too. ``validation_file`` is the
config's ``validation_dataset_id`` (checked by ``JobService.start`` like the training file): the
job's validation loss, at each checkpoint and at the end, is a ``metrics`` event with
``valid_loss`` (read from the attempts' ``metrics.jsonl``), as OpenAI's dashboards draw it.

``method`` ``dpo`` (on a preference file) sets the config's ``objective: dpo`` and its
``hyperparameters.beta`` ``dpo_beta``; the job's reply shows the method back.

Pause and resume are the platform's (``JobService.pause``/``resume``): a ``pausing`` or ``paused``
job is ``paused`` here, and resuming queues it again from the checkpoint its pause saved. The events
list words the lifecycle as OpenAI's does (``PauseRequested``, ``Paused``, ``Resumed`` included), and a
run early stopping ended says so in its completion message (the runner's ``early_stopped_at_step``).

Not yet: ``method`` ``reinforcement`` (400).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from api import openai_ft_schemas as ft
from api import schemas
from api.services.base import UserService
from api.services.checkpoints import Losses, job_metric_records
from api.services.datasets import DatasetService
from api.services.jobs import JobService
from api.services.pages import PageRequest, encode_cursor
from domain.config_yaml import config_from_yaml
from domain.errors import NotFound, PlatformError, Problem, Problems, ValidationFailed
from domain.job_states import TERMINAL_STATES, JobState
from domain.training_config import TrainingConfig
from storage import ObjectNotFound, layout
from views.index import sort_key

__all__ = ["FineTuningService", "openai_state"]

T = TypeVar("T")

DEFAULTS = TrainingConfig()
PURPOSE = "fine-tune"

_STATES: dict[str, ft.OpenAIJobState] = {
    JobState.SUBMITTED: "validating_files",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.STOPPING: "running",
    JobState.RETRYING: "running",
    JobState.LOST: "running",
    JobState.PAUSING: "paused",
    JobState.PAUSED: "paused",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.STOPPED: "cancelled",
}
"""The platform's states as OpenAI's: every state an attempt may still come out of is ``running``;
a job asked to pause is ``paused`` at once (its runner is still checkpointing while ``pausing``)."""

_LIMIT_STOPS = frozenset({"budget_exceeded"})
"""Stop reasons that are no cancellation: the job ran out of money (``failed`` for OpenAI)."""

_PARAMS = {
    "dataset_id": "training_file",
    "base_model": "model",
    "epochs": "hyperparameters.n_epochs",
    "batch_size": "hyperparameters.batch_size",
    "learning_rate": "hyperparameters.learning_rate_multiplier",
    "seed": "seed",
    "validation_dataset_id": "validation_file",
    "objective": "method.type",
    "dpo_beta": "method.dpo.hyperparameters.beta",
}
"""``JobService.start``'s field names, as a create request names them."""

_HIDDEN_EVENTS = frozenset({"UsageMetered", "UsageCredited"})
"""Billing's events: at ``/fine-tune/{id}/events`` and ``/billing``, not in OpenAI's event list."""
_WARNINGS = frozenset({"Retrying", "Lost", "AttemptFaulted", "AlertRaised", "StopRequested"})


def _succeeded(event: schemas.JobEvent) -> str:
    """OpenAI's completion message; a run early stopping ended says so, and which step it keeps."""
    metrics = event.data.get("metrics") or {}
    stopped_at = metrics.get("early_stopped_at_step") if isinstance(metrics, dict) else None
    if not isinstance(stopped_at, int | float):
        return "The job has successfully completed"
    best = metrics.get("best_step")
    kept = f"; the model is the best checkpoint's, step {best:.0f}" if isinstance(best, int | float) else ""
    return (
        f"The job has successfully completed: stopped early at step {stopped_at:.0f}, "
        f"the validation loss stopped improving{kept}"
    )


def _paused(event: schemas.JobEvent) -> str:
    step = event.data.get("step")
    at = f" at step {step}" if isinstance(step, int) and step > 0 else ""
    return f"The job was paused{at}: it holds no hardware and is billed nothing until it resumes"


_MESSAGES: dict[str, Callable[[schemas.JobEvent], str]] = {
    "Submitted": lambda e: f"Created fine-tuning job: {e.summary}",
    "Queued": lambda e: "Job queued",
    "Succeeded": _succeeded,
    "Failed": lambda e: f"The job failed: {e.summary}",
    "Stopped": lambda e: f"The job was cancelled: {e.summary}",
    "PauseRequested": lambda e: "Pausing the job: it saves a checkpoint, then releases its hardware",
    "Paused": _paused,
    "Resumed": lambda e: "The job was resumed: a new attempt continues from its last checkpoint",
}


def openai_state(status: str, stop_reason: str | None = None) -> ft.OpenAIJobState:
    """A platform job state as OpenAI names it (a job a spending limit stopped has ``failed``)."""
    if status == JobState.STOPPED and stop_reason in _LIMIT_STOPS:
        return "failed"
    return _STATES[status]


class FineTuningService(UserService):
    """The caller's files and fine-tuning jobs in OpenAI's shapes."""

    @property
    def datasets(self) -> DatasetService:
        return DatasetService(self.rt, self.user_id)

    @property
    def jobs(self) -> JobService:
        return JobService(self.rt, self.user_id)

    # -- files -------------------------------------------------------------------------------

    def file(self, file_id: str) -> ft.FileObject:
        return _file(self.datasets.get(file_id))

    def uploaded(self, dataset: schemas.Dataset) -> ft.FileObject:
        return _file(dataset)

    def files(
        self, *, limit: int = 100, after: str | None = None, order: str = "desc", purpose: str | None = None
    ) -> ft.FileList:
        """A page of the caller's files, newest first (``order`` ``asc``: oldest first)."""
        if purpose is not None and purpose != PURPOSE:
            return ft.FileList(data=[])
        if order == "asc":
            rows = self.datasets.list().datasets
            page, more = _page(rows, lambda r: r.dataset_id, after, limit, "file")
        else:
            cursor = None
            if after is not None:
                found = self._after(self.datasets.get, after, "file")
                cursor = encode_cursor("datasets", sort_key(found.created_at, found.dataset_id))
            listed = self.datasets.list(PageRequest(limit=limit, after=cursor))
            page, more = listed.datasets, listed.has_more
        data = [_file(row) for row in page]
        return ft.FileList(
            data=data,
            has_more=more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    def delete_file(self, file_id: str) -> ft.FileDeleted:
        """Delete the dataset and its files (409 while an active job, paused too, uses it)."""
        return ft.FileDeleted(id=self.datasets.delete(file_id).id)

    # -- jobs --------------------------------------------------------------------------------

    def create(self, request: ft.FineTuningJobCreate) -> ft.FineTuningJob:
        """Check what the platform cannot do yet, translate, and start through ``JobService.start``
        (the config checked whole, the budget and quota asked); errors name OpenAI's parameters."""
        _check_method(request)
        if request.integrations:
            raise ValidationFailed(
                "integrations are not supported: each job's metrics are in its events and checkpoints",
                where="integrations",
            )
        config = _config(request)
        start = schemas.StartJobRequest(
            base_model=request.model, dataset_id=request.training_file, config=config
        )
        try:
            reply = self.jobs.start(start)
        except PlatformError as exc:
            raise _in_openai_terms(exc) from None
        assert reply.job_id is not None
        asked = {
            "validation_file": request.validation_file,
            "suffix": request.suffix,
            "metadata": request.metadata,
        }
        self.rt.bucket.write(layout.job_openai(self.user_id, reply.job_id), msgspec.json.encode(asked))
        return self.job(reply.job_id)

    def job(self, job_id: str) -> ft.FineTuningJob:
        return self._job(self.jobs.status(job_id))

    def list(self, *, limit: int = 20, after: str | None = None) -> ft.FineTuningJobList:
        """A page of the caller's jobs, newest first, after the job ``after``."""
        cursor = None
        if after is not None:
            found = self._after(self.jobs.status, after, "job")
            cursor = encode_cursor("jobs", sort_key(found.created_at, found.job_id))
        listed = self.jobs.list(PageRequest(limit=limit, after=cursor))
        return ft.FineTuningJobList(
            data=[self.job(row.job_id) for row in listed.jobs], has_more=listed.has_more
        )

    def cancel(self, job_id: str) -> ft.FineTuningJob:
        """Stop the job (a running one checkpoints first); 409 once it has ended."""
        self.jobs.stop(job_id, reason="cancelled by the user")
        return self.job(job_id)

    def pause(self, job_id: str) -> ft.FineTuningJob:
        """Pause the job (a running one saves a checkpoint first); 409 once it has ended."""
        self.jobs.pause(job_id)
        return self.job(job_id)

    def resume(self, job_id: str) -> ft.FineTuningJob:
        """Resume a paused job from its checkpoint, as a new attempt; 409 unless it is paused."""
        self.jobs.resume(job_id)
        return self.job(job_id)

    def events(self, job_id: str, *, limit: int = 20, after: str | None = None) -> ft.FineTuningEventList:
        """The job's history, newest first, without billing's events (``/fine-tune/{id}/events``
        has every one); a progress report is a ``metrics`` event, and so is each validation loss
        (``valid_loss``, with the ``train_loss`` of its step), placed among them by time."""
        history = self.jobs.events(job_id).events
        events = [_event(job_id, event) for event in history if event.type not in _HIDDEN_EVENTS]
        records = job_metric_records(self.rt.bucket, self.user_id, self.jobs.status(job_id))
        events += _eval_events(job_id, list(records))
        events.sort(key=lambda e: e.created_at)  # stable: the history keeps its order
        page, more = _page(events[::-1], lambda e: e.id, after, limit, "event")
        return ft.FineTuningEventList(data=page, has_more=more)

    def checkpoints(
        self, job_id: str, *, limit: int = 10, after: str | None = None
    ) -> ft.FineTuningCheckpointList:
        """The job's checkpoints that can still be used, newest first."""
        listing = self.jobs.checkpoints(job_id)
        points = [_checkpoint(job_id, c) for c in reversed(listing.checkpoints) if c.available]
        page, more = _page(points, lambda c: c.id, after, limit, "checkpoint")
        return ft.FineTuningCheckpointList(
            data=page,
            has_more=more,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _job(self, status: schemas.JobStatus) -> ft.FineTuningJob:
        config = self._config(status.job_id)
        asked = self._asked(status.job_id)
        hyperparameters = ft.FineTuningHyperparameters(
            n_epochs=config.get("epochs", DEFAULTS.epochs),
            batch_size=config.get("batch_size", DEFAULTS.batch_size),
            learning_rate_multiplier=round(
                config.get("learning_rate", DEFAULTS.learning_rate) / DEFAULTS.learning_rate, 6
            ),
        )
        state = openai_state(status.status, status.stop_reason)
        ended = status.status in TERMINAL_STATES
        return ft.FineTuningJob(
            id=status.job_id,
            created_at=_unix(status.created_at) or 0,
            error=_error(status, state),
            fine_tuned_model=status.model_id if ended else None,
            finished_at=_unix(status.finished_at) if ended else None,
            hyperparameters=hyperparameters,
            method=_method(config, hyperparameters),
            model=status.base_model,
            organization_id=self.user_id,
            seed=config.get("seed", DEFAULTS.seed),
            status=state,
            trained_tokens=status.tokens if ended else None,
            training_file=status.dataset_id,
            validation_file=asked.get("validation_file") or config.get("validation_dataset_id"),
            metadata=asked.get("metadata"),
            user_provided_suffix=asked.get("suffix"),
        )

    def _config(self, job_id: str) -> dict[str, Any]:
        try:
            text = self.rt.bucket.read(layout.job_config(self.user_id, job_id))
        except ObjectNotFound:  # submitted a moment ago by another process: its defaults
            return {}
        return config_from_yaml(text, where="config", at_line=lambda line: f"config line {line}")

    def _asked(self, job_id: str) -> dict[str, Any]:
        try:
            found = msgspec.json.decode(self.rt.bucket.read(layout.job_openai(self.user_id, job_id)))
        except ObjectNotFound:  # a job started at /fine-tune
            return {}
        return found if isinstance(found, dict) else {}

    @staticmethod
    def _after(get: Callable[[str], T], after: str, noun: str) -> T:
        try:
            return get(after)
        except NotFound:
            raise ValidationFailed(f"no {noun} {after!r:.80} to list after", where="after") from None


def _check_method(request: ft.FineTuningJobCreate) -> None:
    method = request.method
    if method is None:
        return
    if method.type == "reinforcement":
        raise ValidationFailed(
            "method 'reinforcement' is not supported yet; 'supervised' and 'dpo' are", where="method.type"
        )
    asked = (request.config or {}).get("objective")
    objective = _OBJECTIVES[method.type]
    if asked is not None and asked != objective:
        raise ValidationFailed(
            f"method {method.type!r} trains with objective {objective}, but config sets objective {asked!r}",
            where="method.type",
        )


_OBJECTIVES = {"supervised": "sft", "dpo": "dpo"}
"""OpenAI's method types as the config's ``objective``."""


def _method(config: dict[str, Any], hyperparameters: ft.FineTuningHyperparameters) -> ft.FineTuningMethod:
    """The job's method as OpenAI shows it, from its config's ``objective`` (and ``dpo_beta``)."""
    if config.get("objective", DEFAULTS.objective) != "dpo":
        return ft.FineTuningMethod(
            type="supervised", supervised=ft.SupervisedMethod(hyperparameters=hyperparameters)
        )
    dpo = ft.DpoHyperparameters(
        **msgspec.structs.asdict(hyperparameters), beta=config.get("dpo_beta", DEFAULTS.dpo_beta)
    )
    return ft.FineTuningMethod(type="dpo", dpo=ft.DpoMethod(hyperparameters=dpo))


def _config(request: ft.FineTuningJobCreate) -> dict[str, Any]:
    """The training config of a create request: its ``config`` extension, then the hyperparameters
    (``method.supervised.hyperparameters`` winning key by key; ``auto`` keeps the default), the seed."""
    config = dict(request.config or {})
    given: list[ft.FineTuningHyperparameters | None] = [request.hyperparameters]
    method = request.method
    if method is not None and method.supervised is not None:
        given.append(method.supervised.hyperparameters)
    if method is not None and method.type == "dpo":
        config["objective"] = "dpo"
        if method.dpo is not None:
            given.append(method.dpo.hyperparameters)
    values: dict[str, Any] = {}
    for hp in given:
        if hp is not None:
            values.update({k: v for k, v in msgspec.structs.asdict(hp).items() if v is not None})
    if isinstance(values.get("n_epochs"), int):
        config["epochs"] = values["n_epochs"]
    if isinstance(values.get("batch_size"), int):
        config["batch_size"] = values["batch_size"]
    multiplier = values.get("learning_rate_multiplier")
    if isinstance(multiplier, int | float):
        base = config.get("learning_rate", DEFAULTS.learning_rate)
        config["learning_rate"] = base * multiplier if isinstance(base, int | float) else base
    if isinstance(values.get("beta"), int | float):
        config["dpo_beta"] = values["beta"]
    if request.seed is not None:
        config["seed"] = request.seed
    if request.validation_file is not None:
        config["validation_dataset_id"] = request.validation_file
    return config


def _in_openai_terms(exc: PlatformError) -> PlatformError:
    """``exc`` naming the create request's parameters instead of ``/fine-tune``'s fields."""
    if isinstance(exc, Problems):
        renamed = [Problem(_PARAMS.get(p.where, p.where), p.message) for p in exc.problems]
        return Problems(renamed, subject="fine-tuning job")
    if exc.where in _PARAMS:
        exc = copy.copy(exc)
        exc.where = _PARAMS[exc.where or ""]
    return exc


def _unix(at: str | None) -> int | None:
    if not at:
        return None
    return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())


def _file(dataset: schemas.Dataset | schemas.DatasetRow) -> ft.FileObject:
    status = {"validated": "processed", "rejected": "error"}.get(dataset.status, "uploaded")
    details = None
    if isinstance(dataset, schemas.Dataset) and dataset.errors:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in dataset.errors[:5])
        count = dataset.error_count or len(dataset.errors)
        details = f"{count} invalid line(s): {shown}" + (" ..." if count > 5 else "")
    return ft.FileObject(
        id=dataset.dataset_id,
        bytes=dataset.size_bytes,
        created_at=_unix(dataset.created_at) or 0,
        filename=dataset.filename,
        status=status,  # type: ignore[arg-type]
        status_details=details,
    )


def _error(status: schemas.JobStatus, state: str) -> ft.FineTuningJobError | None:
    if state != "failed":
        return None
    if status.status == JobState.STOPPED:
        return ft.FineTuningJobError(
            code=status.stop_reason or "stopped", message=f"stopped: {status.stop_reason}"
        )
    return ft.FineTuningJobError(code="training_failed", message=status.error or "the job failed")


def _event(job_id: str, event: schemas.JobEvent) -> ft.FineTuningEvent:
    created = _unix(event.at) or 0
    event_id = f"{job_id}:event:{event.seq}"
    if event.type == "ProgressReported":
        d = event.data
        data = {
            "step": d.get("step"),
            "total_steps": d.get("total_steps"),
            "train_loss": d.get("loss"),
            "epoch": d.get("epoch"),
            "tokens": d.get("tokens"),
        }
        return ft.FineTuningEvent(
            id=event_id, created_at=created, level="info", message=event.summary, data=data, type="metrics"
        )
    message = _MESSAGES.get(event.type, lambda e: e.summary)(event)
    level = "error" if event.type == "Failed" else "warn" if event.type in _WARNINGS else "info"
    return ft.FineTuningEvent(id=event_id, created_at=created, level=level, message=message)


def _eval_events(job_id: str, records: list[dict[str, Any]]) -> list[ft.FineTuningEvent]:
    """A ``metrics`` event per validation loss of the job's metrics records (a step evaluated again
    by a later attempt: each time), with the training loss its attempt logged at that step."""
    losses = Losses(records)
    events = []
    for record in records:
        step, attempt, loss = record.get("step"), record.get("attempt", 0), record.get("eval_loss")
        if record.get("event") != "eval" or not isinstance(step, int) or not isinstance(loss, int | float):
            continue
        train, _ = losses.at(attempt if isinstance(attempt, int) else 0, step)
        at = record.get("at")
        events.append(
            ft.FineTuningEvent(
                id=f"{job_id}:eval:{attempt}:{step}",
                created_at=_unix(at if isinstance(at, str) else None) or 0,
                level="info",
                message=f"Step {step}: validation loss={float(loss):.4f}",
                data={"step": step, "train_loss": train, "valid_loss": float(loss)},
                type="metrics",
            )
        )
    return events


def _checkpoint(job_id: str, point: schemas.CheckpointInfo) -> ft.FineTuningCheckpoint:
    return ft.FineTuningCheckpoint(
        id=point.checkpoint_id,
        created_at=_unix(point.at) or 0,
        fine_tuned_model_checkpoint=point.checkpoint_id,
        fine_tuning_job_id=job_id,
        metrics=ft.CheckpointMetrics(
            step=point.step, train_loss=point.train_loss, valid_loss=point.eval_loss
        ),
        step_number=point.step,
    )


def _page(
    items: Sequence[T], id_of: Callable[[T], str], after: str | None, limit: int, noun: str
) -> tuple[list[T], bool]:
    """The ``limit`` items after the one whose id is ``after`` (400 naming ``after`` when there is none)."""
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if id_of(item) == after), -1)
        if start < 0:
            raise ValidationFailed(f"no {noun} {after!r:.80} to list after", where="after")
    rest = items[start:]
    return list(rest[:limit]), len(rest) > limit
