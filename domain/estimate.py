"""A job's cost estimate before it runs: tokens to train / assumed throughput, priced exactly.

The estimate is deliberately simple and said to be one: ``tokens`` is the
dataset's estimated tokens per epoch (``DatasetStats.est_tokens``) times the
epochs, or ``max_steps`` optimizer steps of ``batch_size x
gradient_accumulation_steps`` examples of average length when that is smaller;
the GPU time is ``tokens / (tokens_per_s of the GPU type x gpu_count)`` seconds
(``domain.gpu_types``); the cost follows the money rule (``domain.money.cost_usd_micros``). Pure.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from domain.gpu_types import DEFAULT_TOKENS_PER_S, GPU_TYPES
from domain.money import cost_usd_micros
from domain.training_config import TrainingConfig

__all__ = ["Estimate", "estimate_job"]


class Estimate(msgspec.Struct, frozen=True):
    tokens: int
    gpu_ms: int
    usd_micros: int


def estimate_job(
    config: TrainingConfig, stats: dict[str, Any] | None, rows: int | None, usd_micros_per_hour: int
) -> Estimate:
    """The estimated tokens, GPU milliseconds and cost of training ``config`` on a dataset."""
    stats = stats or {}
    examples = int(stats.get("examples") or rows or 0)
    per_epoch = int(stats.get("est_tokens") or 0)
    tokens = per_epoch * config.epochs
    if config.max_steps is not None and examples:
        per_example = per_epoch / examples
        step_examples = config.batch_size * config.gradient_accumulation_steps
        tokens = min(tokens, math.ceil(config.max_steps * step_examples * per_example))
    known = GPU_TYPES.get(config.gpu_type)
    rate = (known.tokens_per_s if known else DEFAULT_TOKENS_PER_S) * config.gpu_count
    gpu_ms = math.ceil(tokens * 1000 / rate) if tokens else 0
    return Estimate(tokens, gpu_ms, cost_usd_micros(gpu_ms, config.gpu_count, usd_micros_per_hour))
