"""A job's cost estimate before it runs: tokens to train / assumed throughput, priced exactly.

The estimate is deliberately simple and said to be one: ``tokens`` is the
dataset's estimated tokens per epoch (``DatasetStats.est_tokens``) times the
epochs, or ``max_steps`` optimizer steps of ``batch_size x
gradient_accumulation_steps`` examples of average length when that is smaller;
the GPU time is ``tokens / (THROUGHPUT[gpu_type] x gpu_count)`` seconds; the
cost follows the money rule (``domain.money.cost_usd_micros``). Pure.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from domain.money import cost_usd_micros
from domain.training_config import TrainingConfig

__all__ = ["DEFAULT_THROUGHPUT", "THROUGHPUT", "Estimate", "estimate_job"]

THROUGHPUT: dict[str, int] = {
    "cpu": 300,
    "t4": 2_000,
    "l4": 3_500,
    "a100-40gb": 11_000,
    "a100-80gb": 12_000,
    "h100-80gb": 20_000,
    "h200": 22_000,
}
"""Assumed training tokens per second per device (a ~1B model with LoRA); a rough guide."""
DEFAULT_THROUGHPUT = 2_000


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
    rate = THROUGHPUT.get(config.gpu_type, DEFAULT_THROUGHPUT) * config.gpu_count
    gpu_ms = math.ceil(tokens * 1000 / rate) if tokens else 0
    return Estimate(tokens, gpu_ms, cost_usd_micros(gpu_ms, config.gpu_count, usd_micros_per_hour))
