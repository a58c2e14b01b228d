"""What the trainer process prints on stdout: one JSON object per line, tagged by ``event``.

The runner (the parent process) reads them with ``decode_event``; any other line (a stray
library print) decodes to ``None``. Torch-free, so the runner can import it cheaply.

::

    {"event": "started", "total_steps": 30, "start_step": 0, "train_examples": 50, ...}
    {"event": "step", "step": 1, "total_steps": 30, "epoch": 0.1, "loss": 9.3, "tokens": 812, ...}
    {"event": "step", ..., "metrics": {"rewards/margins": 0.4, "rewards/accuracies": 1.0, ...}}  (DPO)
    {"event": "eval", "step": 10, "eval_loss": 2.1}
    {"event": "checkpoint", "step": 10, "path": "/work/job/out/checkpoints/checkpoint-10"}
    {"event": "done", "status": "succeeded", "step": 30, "model_dir": ".../model", "metrics": {...},
     "reason": null}
    {"event": "error", "code": "invalid", "message": "...", "where": "lora.r", "retryable": false}
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Checkpoint",
    "Done",
    "Error",
    "Eval",
    "Started",
    "Step",
    "TrainerEvent",
    "decode_event",
    "encode_event",
]


class _Event(msgspec.Struct, tag_field="event", omit_defaults=False):
    pass


class Started(_Event, tag="started"):
    """Training is about to run its first step (``start_step`` > 0 when resumed)."""

    total_steps: int
    start_step: int
    train_examples: int
    eval_examples: int
    dropped_examples: int
    trainable_parameters: int


class Step(_Event, tag="step"):
    """One optimizer step finished; ``tokens`` counts non-padding input tokens since step 0.

    ``metrics``: what else the recipe measured at that step (DPO: TRL's ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``,
    ``logps/rejected``); empty for SFT. The runner keeps it in the attempt's ``metrics.jsonl``.
    """

    step: int
    total_steps: int
    epoch: float
    loss: float
    tokens: int
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class Eval(_Event, tag="eval"):
    """Loss on the validation split at ``step``."""

    step: int
    eval_loss: float


class Checkpoint(_Event, tag="checkpoint"):
    """A resumable checkpoint was written at ``path`` (pass it back as ``resume_from``)."""

    step: int
    path: str


class Done(_Event, tag="done"):
    """Training ended: ``succeeded`` (weights in ``model_dir``) or ``stopped`` (state in ``checkpoint``).

    ``reason`` says why a run ended before ``total_steps``: ``early_stopped`` (the validation loss
    stopped improving; the model is the best checkpoint's, ``metrics`` has ``best_step`` and its
    ``eval_loss``); None otherwise.
    """

    status: Literal["succeeded", "stopped"]
    step: int
    total_steps: int
    model_dir: str | None
    checkpoint: str | None
    metrics: dict[str, float]
    reason: str | None = None


class Error(_Event, tag="error"):
    """Training failed; ``retryable`` is False for bad input (config, dataset, paths)."""

    code: str
    message: str
    where: str | None
    retryable: bool


TrainerEvent = Started | Step | Eval | Checkpoint | Done | Error

_decoder = msgspec.json.Decoder(TrainerEvent)
_encoder = msgspec.json.Encoder()


def encode_event(event: TrainerEvent) -> bytes:
    """One JSON line (with the trailing newline)."""
    return _encoder.encode(event) + b"\n"


def decode_event(line: bytes | str) -> TrainerEvent | None:
    """The event on ``line``, or None when the line is not one of ours."""
    text = line.strip()
    if not text.startswith(b"{" if isinstance(text, bytes) else "{"):
        return None
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return None
