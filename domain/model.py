"""A fine-tuned model in a user's partition: registered when its job writes the weights, then deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from eventsourcing.domain import Aggregate

from domain.base import Deletable, check_count, check_text
from domain.dataset import check_sha256
from domain.errors import ValidationFailed
from domain.ids import check_ids

__all__ = ["MODEL_KINDS", "Model", "ModelFields", "ModelKind", "ModelWeights"]

ModelKind = Literal["lora", "full"]
MODEL_KINDS: tuple[str, ...] = ("lora", "full")


class ModelWeights(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished job wrote: the weights to register as its model."""

    kind: str
    weights_prefix: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    stop_gate: dict[str, Any] | None = None
    """The stop gate's verdict (``runners.trainer.stop_gate``: ``stops``, ``new_tokens``,
    ``max_new_tokens``, ``sample``); None when it could not be checked."""


class ModelFields:
    """What a ``Model`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    model_id: str
    user_id: str
    job_id: str
    base_model: str
    kind: str
    weights_prefix: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]
    status: str
    registered_at: datetime
    updated_at: datetime
    stop_gate: dict[str, Any] | None = None  # a class default: a snapshot taken before the gate lacks it


class Model(Deletable, ModelFields):
    """``kind``: ``lora`` (adapter) or ``full`` (all weights)."""

    ID_KIND, ID_KEY = "model", "model_id"

    class Registered(Aggregate.Created):
        model_id: str
        user_id: str
        job_id: str
        base_model: str
        kind: str
        weights_prefix: str
        sha256: str
        size_bytes: int
        metrics: dict[str, Any]
        at: datetime

        def apply(self, model: Model) -> None:
            model.model_id, model.user_id, model.job_id = self.model_id, self.user_id, self.job_id
            model.base_model, model.kind, model.weights_prefix = (
                self.base_model,
                self.kind,
                self.weights_prefix,
            )
            model.sha256, model.size_bytes, model.metrics = self.sha256, self.size_bytes, dict(self.metrics)
            model.status = "ready"
            model.registered_at = model.updated_at = self.at

    class StopGateChecked(Aggregate.Event):
        """Before it was published, the model answered a prompt greedily: ``stops`` whether the answer
        ended (EOS or the chat template's turn end) within ``max_new_tokens`` (it took ``new_tokens``).
        A model that never stops is flagged, not refused."""

        stops: bool
        new_tokens: int
        max_new_tokens: int
        sample: str
        at: datetime

        def apply(self, model: Model) -> None:
            model.stop_gate = {
                "stops": self.stops,
                "new_tokens": self.new_tokens,
                "max_new_tokens": self.max_new_tokens,
                "sample": self.sample,
            }

    class Deleted(Deletable.Deleted):
        """Stored as ``Model.Deleted``."""

    @classmethod
    def register(
        cls,
        *,
        model_id: str,
        user_id: str,
        job_id: str,
        base_model: str,
        kind: str,
        weights_prefix: str,
        sha256: str,
        size_bytes: int,
        metrics: dict[str, Any],
        at: datetime,
        stop_gate: dict[str, Any] | None = None,
    ) -> Model:
        """The weights of job ``job_id`` lie under ``weights_prefix``; ``sha256`` is of their manifest;
        ``stop_gate``: the stop gate's verdict, recorded with it (``StopGateChecked``)."""
        check_ids(model_id=model_id, user_id=user_id, job_id=job_id, base_model=base_model)
        if kind not in MODEL_KINDS:
            raise ValidationFailed(
                f"kind must be one of {', '.join(MODEL_KINDS)} (got {kind!r:.20})", where="kind"
            )
        check_text(weights_prefix, where="weights_prefix")
        check_sha256(sha256)
        check_count(size_bytes, where="size_bytes")
        if not isinstance(metrics, dict):
            raise ValidationFailed("metrics must be a mapping", where="metrics")
        if stop_gate is not None:
            check_count(stop_gate.get("new_tokens"), where="stop_gate.new_tokens")
            check_count(stop_gate.get("max_new_tokens"), where="stop_gate.max_new_tokens")
            if not isinstance(stop_gate.get("stops"), bool):
                raise ValidationFailed("stop_gate.stops must be true or false", where="stop_gate.stops")
        model = cls._create_at(
            cls.Registered,
            at,
            model_id=model_id,
            user_id=user_id,
            job_id=job_id,
            base_model=base_model,
            kind=kind,
            weights_prefix=weights_prefix,
            sha256=sha256,
            size_bytes=size_bytes,
            metrics=dict(metrics),
        )
        if stop_gate is not None:
            model._record(
                cls.StopGateChecked,
                at,
                stops=stop_gate["stops"],
                new_tokens=stop_gate["new_tokens"],
                max_new_tokens=stop_gate["max_new_tokens"],
                sample=str(stop_gate.get("sample", ""))[:200],
            )
        return model
