"""Where a new job's training starts: a checkpoint or a model of the caller's (``tune start --from``).

``start_from`` names a checkpoint (``<job_id>:<step>``, or ``<job_id>`` for the job's latest checkpoint
still in the bucket) or a model (its model id). Either must be the caller's (another user's answers
404, as an unknown one does), usable (a pruned checkpoint, a deleted model: 404) and trained on the
same base model with the same method as the new job (else 400). The new job starts from its weights
only, with a fresh optimizer, schedule and step count (its own config: another job's optimizer state
belongs to another schedule and dataset); its LoRA adapter must have the start point's shape (``r``,
``alpha``, ``target_modules``), which a config that sets no ``method`` or ``lora`` takes from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api import schemas
from api.services.base import UserService
from api.services.checkpoints import (
    CHECKPOINT_SEPARATOR,
    checkpoint_list,
    parse_checkpoint_ref,
    pick_checkpoint,
)
from domain.errors import NotFound, ValidationFailed
from domain.ids import check_id
from domain.training_config import LoraConfig, TrainingConfig, parse_training_config
from storage import layout

__all__ = ["StartPointFound", "find_start_point"]

WHERE = "start_from"
_INHERITED = ("method", "lora")
"""What a job's config takes from its start point's when it sets none."""


@dataclass(frozen=True)
class StartPointFound:
    """A start point: what the job records (``point``), the base model, method and training config
    (None: not known) it was trained with, and how to name it in a message."""

    point: schemas.StartPoint
    base_model: str
    method: str
    config: dict[str, Any] | None
    noun: str

    def inherit(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` (a new job's config as sent) with the start point's ``method`` and ``lora`` where it
        sets none."""
        source = self.config or {"method": self.method}
        return {**{key: source[key] for key in _INHERITED if key in source and key not in raw}, **raw}

    def check_fits(self, base_model: str, config: TrainingConfig) -> None:
        """ValidationFailed (``start_from``) unless a job on ``base_model`` with ``config`` can start
        from this point: the same base model and method and, for LoRA, the same adapter shape."""
        if base_model != self.base_model:
            raise ValidationFailed(
                f"{self.noun} was trained on base model {self.base_model}, not {base_model}: "
                f"start from a checkpoint or model of {base_model}, or use base_model {self.base_model}",
                where=WHERE,
            )
        if config.method != self.method:
            raise ValidationFailed(
                f"{self.noun} holds {_weights(self.method)}; a {config.method} job cannot start from it "
                f"(set method: {self.method})",
                where=WHERE,
            )
        if config.method != "lora" or self.config is None:
            return
        theirs = parse_training_config(self.config).lora
        if _shape(theirs) != _shape(config.lora):
            raise ValidationFailed(
                f"{self.noun} is a LoRA adapter of r {theirs.r}, alpha {theirs.alpha:g}, target_modules "
                f"{list(theirs.target_modules)}; this config asks r {config.lora.r}, alpha "
                f"{config.lora.alpha:g}, target_modules {list(config.lora.target_modules)} "
                "(leave lora out of the config to take the adapter's)",
                where=WHERE,
            )


def find_start_point(service: UserService, ref: str) -> StartPointFound:
    """The caller's checkpoint or model that ``ref`` names; NotFound (``start_from``) otherwise."""
    if CHECKPOINT_SEPARATOR in ref:
        return _checkpoint(service, ref)
    check_id(ref, kind=WHERE)
    model = service.rt.view_json(layout.model_metadata(service.user_id, ref))
    if model is not None and model.get("status") != "deleted":
        return _model(service, ref)
    if service.rt.view_json(layout.job_status(service.user_id, ref)) is not None:
        return _checkpoint(service, ref)
    raise NotFound(f"no checkpoint or model {ref} to start from", where=WHERE)


def _checkpoint(service: UserService, ref: str) -> StartPointFound:
    job_id, step = parse_checkpoint_ref(ref)
    try:
        status = service.object_view(layout.job_status, "job", job_id, schemas.JobStatus)
    except NotFound:
        raise NotFound(f"no job {job_id} to start from", where=WHERE) from None
    chosen, folder = pick_checkpoint(
        checkpoint_list(service.rt.bucket, service.user_id, status), status, step
    )
    config = dict(service.app.get_job(job_id).config)
    return StartPointFound(
        point=schemas.StartPoint(kind="checkpoint", id=chosen.checkpoint_id, path=folder),
        base_model=status.base_model,
        method=str(config.get("method", "lora")),
        config=config,
        noun=f"checkpoint {chosen.checkpoint_id}",
    )


def _model(service: UserService, model_id: str) -> StartPointFound:
    model = service.object_view(layout.model_metadata, "model", model_id, schemas.Model)
    if model.status != "ready":
        raise NotFound(
            f"model {model_id} is {model.status}; only a ready model can be started from", where=WHERE
        )
    config: dict[str, Any] | None = None
    if model.job_id:
        try:
            config = dict(service.app.get_job(model.job_id).config)
        except NotFound:
            config = None
    return StartPointFound(
        point=schemas.StartPoint(kind="model", id=model_id, path=model.weights_prefix),
        base_model=model.base_model,
        method=model.kind,
        config=config,
        noun=f"model {model_id}",
    )


def _weights(method: str) -> str:
    return "a LoRA adapter" if method == "lora" else "full weights"


def _shape(lora: LoraConfig) -> tuple[int, float, list[str]]:
    return lora.r, float(lora.alpha), sorted(lora.target_modules)
