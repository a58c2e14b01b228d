"""The wire shapes of OpenAI-compatible fine-tuning (``/v1/files``, ``/v1/fine_tuning/jobs``).

They follow ``openai.types`` (``FileObject``, ``FileDeleted``, ``fine_tuning.FineTuningJob``,
``FineTuningJobEvent``, ``jobs.FineTuningJobCheckpoint``) and the cursor pages the official
client walks (``{"object": "list", "data": [...], "has_more": ...}``, the next page asked with
``after=<last id>``). Times are Unix seconds. Like ``api.schemas``, this module imports only
msgspec and the standard library.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "CheckpointMetrics",
    "DpoHyperparameters",
    "DpoMethod",
    "FileDeleted",
    "FileList",
    "FileObject",
    "FineTuningCheckpoint",
    "FineTuningCheckpointList",
    "FineTuningEvent",
    "FineTuningEventList",
    "FineTuningHyperparameters",
    "FineTuningJob",
    "FineTuningJobCreate",
    "FineTuningJobError",
    "FineTuningJobList",
    "FineTuningMethod",
    "OpenAIJobState",
    "SupervisedMethod",
]

OpenAIJobState = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]

Auto = Literal["auto"]


# -- files ----------------------------------------------------------------------------------


class FileObject(msgspec.Struct, kw_only=True):
    """An uploaded file: one of the caller's datasets (``id`` is its ``dataset_id``).

    ``status`` is ``processed`` once validated, ``error`` when rejected (``status_details`` then
    names the bad lines, as ``GET /datasets/{id}`` lists them all).
    """

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None


class FileList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# -- jobs -----------------------------------------------------------------------------------


class FineTuningHyperparameters(msgspec.Struct, kw_only=True):
    """``auto`` takes the platform's default (``n_epochs`` 3, ``batch_size`` 4, the learning rate
    2e-4 times ``learning_rate_multiplier`` 1); a job's reply shows the values it trains with."""

    n_epochs: Annotated[int, msgspec.Meta(ge=1, le=1000)] | Auto | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] | Auto | None = None
    learning_rate_multiplier: Annotated[float, msgspec.Meta(gt=0, le=5000)] | Auto | None = None


class DpoHyperparameters(FineTuningHyperparameters, kw_only=True):
    """``method.dpo.hyperparameters``: the supervised ones and DPO's ``beta`` (config ``dpo_beta``,
    default 0.1; ``auto`` keeps it): how far the tuned model may drift from the reference."""

    beta: Annotated[float, msgspec.Meta(gt=0, le=2)] | Auto | None = None


class _SupervisedIn(msgspec.Struct, kw_only=True):
    hyperparameters: FineTuningHyperparameters | None = None


class _DpoIn(msgspec.Struct, kw_only=True):
    hyperparameters: DpoHyperparameters | None = None


class _MethodIn(msgspec.Struct, kw_only=True):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: _SupervisedIn | None = None
    dpo: _DpoIn | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(msgspec.Struct, kw_only=True):
    """``POST /v1/fine_tuning/jobs``: OpenAI's create parameters.

    ``model`` is a base model name (``GET /v1/models``: those owned by ``tune``);
    ``training_file`` and ``validation_file`` are ids of the caller's validated files;
    ``hyperparameters`` (or, the newer place, ``method.supervised.hyperparameters``, which wins
    key by key) may each be ``auto``. ``config`` (an extension: ``extra_body={"config": {...}}``
    with the official client) is a platform training config (``/fine-tune``'s keys: ``gpu_type``,
    ``max_steps``, ``lora``...) under the hyperparameters.
    """

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    training_file: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    validation_file: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    hyperparameters: FineTuningHyperparameters | None = None
    method: _MethodIn | None = None
    suffix: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] | None
    ) = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None = None
    metadata: (
        Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=512)]], msgspec.Meta(max_length=16)] | None
    ) = None
    integrations: list[dict[str, Any]] | None = None
    config: dict[str, Any] | None = None


class FineTuningJobError(msgspec.Struct, kw_only=True):
    code: str
    message: str
    param: str | None = None


class SupervisedMethod(msgspec.Struct, kw_only=True):
    hyperparameters: FineTuningHyperparameters


class DpoMethod(msgspec.Struct, kw_only=True):
    hyperparameters: DpoHyperparameters


class FineTuningMethod(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How the job trains: ``supervised`` (config ``objective: sft``) or ``dpo`` (``objective: dpo``),
    with the hyperparameters it trains with under the type's own key (the other key is left out)."""

    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class FineTuningJob(msgspec.Struct, kw_only=True):
    """A job as OpenAI's ``fine_tuning.job``; the same job as ``GET /fine-tune/{id}/status``.

    ``status`` maps the platform's states: ``submitted`` -> ``validating_files``, ``queued`` ->
    ``queued``; ``running``, ``stopping``, ``retrying`` and ``lost`` -> ``running``; ``succeeded``;
    ``failed``; ``stopped`` -> ``cancelled`` (``failed``, with ``error.code``, when a spending limit
    stopped it). ``fine_tuned_model`` is the model id to call at ``/v1/chat/completions``.
    ``user_provided_suffix`` is the ``suffix`` sent (kept; model ids are the platform's own).
    """

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: FineTuningJobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: FineTuningHyperparameters
    method: FineTuningMethod
    model: str
    organization_id: str
    result_files: list[str] = msgspec.field(default_factory=list)
    seed: int
    status: OpenAIJobState
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None


class FineTuningJobList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningEvent(msgspec.Struct, kw_only=True):
    """One event of the job's history: ``type`` ``metrics`` for a training step (``data``: step,
    total_steps, train_loss, epoch, tokens), ``message`` for the rest."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class FineTuningEventList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FineTuningEvent]
    has_more: bool = False


class CheckpointMetrics(msgspec.Struct, kw_only=True, omit_defaults=True):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class FineTuningCheckpoint(msgspec.Struct, kw_only=True):
    """A checkpoint that can still be used: ``id`` is ``<job_id>:<step>`` (what ``start_from`` takes,
    and ``fine_tuned_model_checkpoint`` too: checkpoints are not served as models)."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class FineTuningCheckpointList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FineTuningCheckpoint]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
