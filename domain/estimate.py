"""A job's cost estimate before it runs: the trainer's own step count, priced from measured throughput.

Two halves, both pure:

``plan_workload`` counts what the trainer will do, exactly as it counts (``count_steps``,
``held_out_examples``: the trainer's data split calls the same function, so the two cannot
drift): ``validation_split`` holds ``max(1, round(n x split))`` examples out; a micro-batch is
``batch_size`` examples per device (``gpu_count`` devices); an optimizer step is
``gradient_accumulation_steps`` micro-batches, a short last one included, so an epoch is
``max(ceil(ceil(train / (batch_size x gpu_count)) / accumulation), 1)`` steps; ``max_steps``,
when set, overrides the epochs (transformers' ``Trainer``: it cycles the data as often as it
needs). The tokens trained are the examples seen times the dataset's estimated tokens per
example (``DatasetStats.est_tokens``), each example capped at ``max_seq_length`` (the trainer
truncates). Examples the trainer drops (no assistant token left within ``max_seq_length``) need
the base model's tokenizer to be known; the plan counts every example, so where some are dropped
it counts more steps than run: the estimate errs high, never low.

What prices a workload is its ``compute_tokens``: its tokens as training tokens of supervised
fine-tuning (SFT), the unit of a ``Measurement``. A token trained costs a forward and a backward
pass, about three forwards (2N FLOPs forward, 4N backward for N parameters); so:

- SFT trains ``tokens`` (factor 1);
- DPO (``objective: dpo``) trains each pair as two sequences, prompt + preferred and prompt +
  non-preferred, and runs the reference model forward on both (the adapter switched off with LoRA,
  a frozen copy with full training): 4/3 of a training pass per sequence token. The stats count a
  pair's prompt once; taken as a third of the pair (a prompt and two answers alike), the sequences
  hold 4/3 of its tokens, so a DPO token costs ``DPO_TOKEN_COST`` = 4/3 x 4/3 = 16/9 (8/3 of an SFT
  pass over prompt + preferred answer: the "about 2x+ an SFT pass" DPO is known for);
- a validation set adds one evaluation, forward only, at every checkpoint and at the last step
  (``ceil(steps / checkpoint_every_steps)`` of them, as transformers evaluates with ``eval_steps``):
  ``EVAL_TOKEN_COST`` = 1/3 per token evaluated for SFT, twice that for DPO (policy and
  reference on both sequences: 2/3 x 4/3). Its examples are the held-out ones (``validation_split``:
  the dataset's mean length) or the validation dataset's (``validation`` stats), each capped at
  ``max_seq_length``.

An earlier job's measurement is counted in the same unit (``api.services.estimates``), so an SFT
job's pace prices a DPO job and a job with a validation set prices one without.

``estimate_job`` prices that workload from evidence, best first:

- ``measured``: earlier finished jobs on the same base model, GPU type and count (``Measurement``:
  the tokens they trained, counted in the same estimated unit, their training time and the rest of
  their billed time: loading, data preparation, saving, the fixed cost of an attempt that dominates
  a small job). Each predicts ``overhead + tokens x train_ms / sample_tokens``; the expected figure
  is ``pooled``'s (their median overhead, their pace over all the tokens they trained), the range
  the spread of all these predictions widened by ``MEASURED_MARGIN``;
- ``calibration``: a measured run of the base model on the GPU type (``CALIBRATION``), range
  ``CALIBRATION_MARGIN``;
- ``assumed``: the GPU type's assumed throughput (``domain.gpu_types``) and ``ASSUMED_OVERHEAD_MS``,
  said to be a guess by its wide range ``ASSUMED_MARGIN``.

The pre-start budget check uses the high end (``Estimate.high_usd_micros``). Money stays exact
integers (``domain.money.cost_usd_micros``); the margins are rationals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal

import msgspec

from domain.gpu_types import DEFAULT_TOKENS_PER_S, GPU_TYPES
from domain.money import cost_usd_micros
from domain.training_config import TrainingConfig

__all__ = [
    "ASSUMED_MARGIN",
    "ASSUMED_OVERHEAD_MS",
    "CALIBRATION",
    "CALIBRATION_MARGIN",
    "DPO_TOKEN_COST",
    "EVAL_TOKEN_COST",
    "MEASURED_MARGIN",
    "Estimate",
    "Measurement",
    "Source",
    "Workload",
    "count_steps",
    "estimate_job",
    "held_out_examples",
    "plan_workload",
    "pooled",
]

Source = Literal["measured", "calibration", "assumed"]

MEASURED_MARGIN = (Fraction(4, 5), Fraction(5, 4))
"""The range around what earlier jobs predict: their lowest x 0.8 to their highest x 1.25."""
CALIBRATION_MARGIN = (Fraction(2, 3), Fraction(3, 2))
"""The range around a calibration run's prediction (another machine of the type, another dataset)."""
ASSUMED_MARGIN = (Fraction(1, 4), Fraction(4))
"""The range around an assumption: a quarter to four times it."""
ASSUMED_OVERHEAD_MS = 60_000
"""What an attempt is assumed to take besides training (start, model load, data, save) when nothing
was measured: about a minute (a small model on CPU measured 60-110 s)."""

DPO_TOKEN_COST = Fraction(16, 9)
"""A DPO pair's token in SFT training tokens: both sequences (the prompt twice: 4/3 of the pair's
tokens), each trained (1) and run through the reference model (1/3)."""
EVAL_TOKEN_COST = {"sft": Fraction(1, 3), "dpo": Fraction(8, 9)}
"""A token evaluated, in SFT training tokens, per objective: a forward pass (DPO: policy and reference
on both sequences)."""


class Measurement(msgspec.Struct, frozen=True):
    """What one finished attempt took: ``tokens`` (estimated unit, ``plan_workload``) trained in
    ``train_ms``, plus ``overhead_ms`` of the rest of its billed GPU time."""

    tokens: int
    train_ms: int
    overhead_ms: int

    def predict_ms(self, tokens: int) -> int:
        """The GPU milliseconds an attempt training ``tokens`` takes at this measurement's pace."""
        train = math.ceil(tokens * self.train_ms / self.tokens) if self.tokens > 0 else 0
        return self.overhead_ms + train


CALIBRATION: dict[tuple[str, str], Measurement] = {
    # smollm2-135m, LoRA (the sample config) on 2 CPU cores with nothing else running (load < 1): the
    # quick start's job twice (28 steps each), pooled by `tune admin calibrate` (2026-12-06). Overhead
    # (trainer start, model load, final save) ~5.6 s; training ~7.3 ms an estimated token. The same
    # jobs on the same cores shared with other work (load 6-10) trained 5-15x slower: an estimate is
    # of a machine that is not shared.
    ("smollm2-135m", "cpu"): Measurement(tokens=15_640, train_ms=113_556, overhead_ms=5_577),
}
"""Measured runs per (base model, GPU type): the fallback where the platform has no jobs of its own."""


class Workload(msgspec.Struct, frozen=True):
    """What the trainer will do: its examples, optimizer steps, examples seen and (estimated) tokens
    trained; the ``evaluations`` of ``eval_tokens`` each; all of it as SFT training tokens
    (``compute_tokens``: what a ``Measurement`` prices)."""

    train_examples: int
    eval_examples: int
    steps: int
    examples_seen: int
    tokens: int
    eval_tokens: int = 0
    evaluations: int = 0
    compute_tokens: int = 0


class Estimate(msgspec.Struct, frozen=True):
    """The expected tokens, steps, GPU time and cost, with the cost's range and where it comes from."""

    tokens: int
    gpu_ms: int
    usd_micros: int
    steps: int = 0
    low_usd_micros: int = 0
    high_usd_micros: int = 0
    source: Source = "assumed"
    samples: int = 0

    @property
    def basis(self) -> str:
        """The source in words: ``measured from 3 jobs``, ``calibration``, ``assumed``."""
        if self.source == "measured":
            return f"measured from {self.samples} job{'s' if self.samples != 1 else ''}"
        return self.source


def held_out_examples(examples: int, validation_split: float) -> int:
    """How many of ``examples`` the trainer holds out for validation (``validation_split`` of them,
    at least one when the split is set)."""
    return max(1, round(examples * validation_split)) if validation_split > 0 else 0


def count_steps(
    train_examples: int,
    *,
    batch_size: int,
    gradient_accumulation_steps: int,
    epochs: int,
    max_steps: int | None,
    devices: int = 1,
) -> int:
    """The optimizer steps the trainer takes (transformers' ``Trainer.set_initial_training_values``)."""
    if max_steps is not None:
        return max_steps
    return epochs * steps_per_epoch(train_examples, batch_size, gradient_accumulation_steps, devices)


def steps_per_epoch(train_examples: int, batch_size: int, accumulation: int, devices: int) -> int:
    """Optimizer steps in one pass over ``train_examples`` (at least one)."""
    batches = -(-train_examples // (batch_size * devices))
    return max(-(-batches // accumulation), 1)


def plan_workload(
    config: TrainingConfig,
    stats: Mapping[str, Any] | None,
    rows: int | None,
    *,
    validation: Mapping[str, Any] | None = None,
) -> Workload:
    """The trainer's work on a dataset of ``stats`` (``DatasetStats`` as stored) or ``rows`` examples;
    ``validation``: the stats of the config's ``validation_dataset_id``."""
    stats = stats or {}
    examples = int(stats.get("examples") or rows or 0)
    held = held_out_examples(examples, config.validation_split) if examples else 0
    train = max(examples - held, 0)
    devices = config.gpu_count
    steps = count_steps(
        train,
        batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        epochs=config.epochs,
        max_steps=config.max_steps,
        devices=devices,
    )
    per_epoch = steps_per_epoch(train, config.batch_size, config.gradient_accumulation_steps, devices)
    full, rest = divmod(steps, per_epoch)
    step_examples = config.batch_size * devices * config.gradient_accumulation_steps
    seen = full * train + min(rest * step_examples, train)
    epoch_tokens = _capped_tokens(stats, examples, config.max_seq_length)
    tokens = -(-seen * epoch_tokens // examples) if examples else 0
    if config.validation_dataset_id is not None:
        held = int((validation or {}).get("examples") or 0)
        eval_tokens = _capped_tokens(validation or {}, held, config.max_seq_length)
    else:
        eval_tokens = -(-held * epoch_tokens // examples) if examples else 0
    evaluations = -(-steps // config.checkpoint_every_steps) if held else 0
    dpo = config.objective == "dpo"
    compute = (
        tokens * (DPO_TOKEN_COST if dpo else 1)
        + evaluations * eval_tokens * EVAL_TOKEN_COST["dpo" if dpo else "sft"]
    )
    return Workload(train, held, steps, seen, tokens, eval_tokens, evaluations, math.ceil(compute))


def _capped_tokens(stats: Mapping[str, Any], examples: int, max_seq_length: int) -> int:
    """The estimated tokens of ``examples`` examples of ``stats``, each capped at ``max_seq_length``."""
    return min(int(stats.get("est_tokens") or 0), examples * max_seq_length)


def estimate_job(
    config: TrainingConfig,
    stats: Mapping[str, Any] | None,
    rows: int | None,
    usd_micros_per_hour: int,
    *,
    base_model: str | None = None,
    evidence: Sequence[Measurement] = (),
    validation: Mapping[str, Any] | None = None,
) -> Estimate:
    """The estimate of training ``config`` on a dataset, from ``evidence`` (earlier jobs on the same
    base model, GPU type and count), else the calibration of ``base_model`` on the GPU type, else the
    GPU type's assumed throughput; ``validation``: the stats of its validation dataset, if any."""
    work = plan_workload(config, stats, rows, validation=validation)
    calibration = CALIBRATION.get((base_model or "", config.gpu_type))
    source: Source
    if evidence:
        source, margin, samples = "measured", MEASURED_MARGIN, list(evidence)
    elif calibration is not None:
        source, margin, samples = "calibration", CALIBRATION_MARGIN, [calibration]
    else:
        known = GPU_TYPES.get(config.gpu_type)
        rate = (known.tokens_per_s if known else DEFAULT_TOKENS_PER_S) * config.gpu_count
        source, margin = "assumed", ASSUMED_MARGIN
        samples = [Measurement(tokens=rate, train_ms=1000, overhead_ms=ASSUMED_OVERHEAD_MS)]
    predicted = sorted(m.predict_ms(work.compute_tokens) for m in samples)
    gpu_ms = pooled(samples).predict_ms(work.compute_tokens)
    predicted = sorted([*predicted, gpu_ms])
    low_ms = math.floor(predicted[0] * margin[0])
    high_ms = math.ceil(predicted[-1] * margin[1])

    def cost(ms: int) -> int:
        return cost_usd_micros(ms, config.gpu_count, usd_micros_per_hour)

    return Estimate(
        tokens=work.tokens,
        gpu_ms=gpu_ms,
        usd_micros=cost(gpu_ms),
        steps=work.steps,
        low_usd_micros=cost(low_ms),
        high_usd_micros=cost(high_ms),
        source=source,
        samples=len(evidence) if source == "measured" else 0,
    )


def pooled(samples: Sequence[Measurement]) -> Measurement:
    """One measurement standing for ``samples``: their median overhead, and their pace pooled over all
    the tokens they trained (their training times summed over their tokens summed).

    The pace is pooled rather than the median of each sample's: a short job's pace is the noisiest
    (a few steps, each as slow as the machine was at that moment), so each job counts as much as it
    trained. The overhead is a median: it is one figure per attempt whatever its size.
    """
    if len(samples) == 1:
        return samples[0]
    overhead = _median(sorted(m.overhead_ms for m in samples))
    trained = [m for m in samples if m.tokens > 0]
    tokens = sum(m.tokens for m in trained)
    return Measurement(tokens=tokens, train_ms=sum(m.train_ms for m in trained), overhead_ms=overhead)


def _median(values: Sequence[int]) -> int:
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle] + 1) // 2
