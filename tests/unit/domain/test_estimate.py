"""The estimate: the trainer's step count, priced from earlier jobs, a calibration, or an assumption."""

from __future__ import annotations

from typing import Any

import pytest

from domain.estimate import (
    ASSUMED_OVERHEAD_MS,
    CALIBRATION,
    Measurement,
    count_steps,
    estimate_job,
    held_out_examples,
    plan_workload,
    pooled,
)
from domain.money import cost_usd_micros
from domain.training_config import parse_training_config

STATS = {"examples": 100, "est_tokens": 20_000}  # 200 tokens an example
CPU = 50_000  # µ$ an hour


def config(**values: Any):
    return parse_training_config(values)


def test_max_steps_overrides_the_epochs_even_when_it_asks_for_more() -> None:
    # 100 examples in batches of 4: 25 steps an epoch; max_steps 400 is 16 passes, not min(3 epochs, 400)
    plan = plan_workload(config(epochs=3, batch_size=4, max_steps=400), STATS, None)
    assert plan.steps == 400 and plan.examples_seen == 1_600 and plan.tokens == 320_000
    short = plan_workload(config(epochs=3, batch_size=4, max_steps=30), STATS, None)
    assert short.steps == 30 and short.examples_seen == 100 + 5 * 4


def test_epochs_with_accumulation_and_validation_count_like_the_trainer() -> None:
    plan = plan_workload(
        config(epochs=2, batch_size=3, gradient_accumulation_steps=4, validation_split=0.1), STATS, None
    )
    # 10 held out, 90 trained: 30 micro-batches, 8 steps an epoch (the last one short)
    assert (plan.train_examples, plan.eval_examples, plan.steps) == (90, 10, 16)
    assert plan.examples_seen == 180 and plan.tokens == 36_000
    assert held_out_examples(3, 0.01) == 1 and held_out_examples(3, 0.0) == 0
    assert count_steps(0, batch_size=4, gradient_accumulation_steps=1, epochs=2, max_steps=None) == 2


def test_several_gpus_share_each_step() -> None:
    assert (
        plan_workload(config(epochs=1, batch_size=4, gpu_count=2, gpu_type="h200"), STATS, None).steps == 13
    )


def test_examples_longer_than_max_seq_length_count_as_truncated() -> None:
    assert plan_workload(config(epochs=1, max_seq_length=64), STATS, None).tokens == 6_400


def test_earlier_jobs_price_it_with_their_overhead_and_pace() -> None:
    # an earlier job trained 40,000 tokens in 20 s and billed 100 s more (start, load, save)
    measured = Measurement(tokens=40_000, train_ms=20_000, overhead_ms=100_000)
    estimate = estimate_job(config(epochs=1), STATS, None, CPU, base_model="m", evidence=[measured])
    assert estimate.source == "measured" and estimate.basis == "measured from 1 job"
    assert estimate.gpu_ms == 100_000 + 10_000
    assert estimate.usd_micros == cost_usd_micros(110_000, 1, CPU)
    assert estimate.low_usd_micros == cost_usd_micros(88_000, 1, CPU)
    assert estimate.high_usd_micros == cost_usd_micros(137_500, 1, CPU)
    assert all(
        isinstance(v, int) for v in (estimate.usd_micros, estimate.low_usd_micros, estimate.high_usd_micros)
    )


def test_a_tiny_job_costs_mostly_its_overhead() -> None:
    measured = Measurement(tokens=40_000, train_ms=20_000, overhead_ms=100_000)
    six_steps = estimate_job(config(max_steps=6, batch_size=1), STATS, None, CPU, evidence=[measured])
    assert six_steps.steps == 6 and six_steps.gpu_ms == 100_000 + 600


def test_several_jobs_pool_their_pace_and_give_their_spread() -> None:
    samples = [Measurement(1_000, 1_000, 0), Measurement(1_000, 2_000, 0), Measurement(1_000, 4_000, 0)]
    estimate = estimate_job(config(epochs=1), STATS, None, 3_600_000, evidence=samples)
    # 20,000 tokens at 7 s per 3,000 tokens; each job alone predicts 20, 40 and 80 s
    assert estimate.basis == "measured from 3 jobs" and estimate.gpu_ms == 46_667
    assert estimate.low_usd_micros == 16_000 and estimate.high_usd_micros == 100_000


def test_a_short_job_s_noisy_pace_counts_as_much_as_it_trained() -> None:
    # a 10,000-token job at 1 ms a token and a 1,000-token one caught on a busy machine (5 ms a token):
    # the median of their paces would say 3 ms; pooled, 15 s over 11,000 tokens
    long_job, short_job = Measurement(10_000, 10_000, 30_000), Measurement(1_000, 5_000, 10_000)
    estimate = estimate_job(config(epochs=1), STATS, None, 3_600_000, evidence=[long_job, short_job])
    assert estimate.gpu_ms == 20_000 + 27_273  # their median overhead, then 20,000 tokens pooled
    assert pooled([long_job]) == long_job


def test_without_jobs_a_calibration_then_the_assumption() -> None:
    (base_model, gpu_type), calibration = next(iter(CALIBRATION.items()))
    calibrated = estimate_job(config(epochs=1, gpu_type=gpu_type), STATS, None, CPU, base_model=base_model)
    assert calibrated.source == "calibration" and calibrated.gpu_ms == calibration.predict_ms(20_000)
    assumed = estimate_job(config(epochs=1, gpu_type="h200"), STATS, None, CPU, base_model=base_model)
    assert assumed.source == "assumed" and assumed.gpu_ms == ASSUMED_OVERHEAD_MS + 910  # 22,000 tokens/s
    assert assumed.low_usd_micros < assumed.usd_micros < assumed.high_usd_micros


@pytest.mark.parametrize("stats", [None, {}, {"examples": 0}])
def test_a_dataset_without_stats_estimates_the_overhead_alone(stats) -> None:
    estimate = estimate_job(config(gpu_type="h200"), stats, None, CPU)
    assert estimate.tokens == 0 and estimate.gpu_ms == ASSUMED_OVERHEAD_MS


PACE = Measurement(tokens=1_000, train_ms=1_000, overhead_ms=0)  # 1 ms a token: gpu_ms is the compute


def test_dpo_counts_both_sequences_and_the_reference_pass() -> None:
    """A pair is trained as two sequences (its prompt twice) and run through the reference model too."""
    sft = plan_workload(config(epochs=1), STATS, None)
    dpo = plan_workload(config(epochs=1, objective="dpo"), STATS, None)
    assert dpo.tokens == sft.tokens == sft.compute_tokens == 20_000  # the tokens trained, as shown
    assert dpo.compute_tokens == 35_556 == -(-20_000 * 16 // 9)  # 4/3 sequence tokens x 4/3 passes
    # an SFT pass over prompt + preferred answer (2/3 of a pair's tokens) costs 8/3 times less: 2x+
    assert dpo.compute_tokens / (sft.compute_tokens * 2 / 3) == pytest.approx(8 / 3, rel=1e-4)
    priced = estimate_job(config(epochs=1, objective="dpo"), STATS, None, CPU, evidence=[PACE])
    assert priced.gpu_ms == 35_556 and priced.tokens == 20_000


def test_a_validation_split_adds_an_evaluation_at_each_checkpoint_and_the_last_step() -> None:
    plan = plan_workload(
        config(
            epochs=2,
            batch_size=3,
            gradient_accumulation_steps=4,
            validation_split=0.1,
            checkpoint_every_steps=5,
        ),
        STATS,
        None,
    )
    # 16 steps: evaluations at 5, 10, 15 and 16, each forward over the 10 held-out examples (2,000 tokens)
    assert (plan.steps, plan.evaluations, plan.eval_tokens, plan.tokens) == (16, 4, 2_000, 36_000)
    assert plan.compute_tokens == 36_000 + -(-4 * 2_000 // 3)
    every_16 = plan_workload(
        config(
            epochs=2,
            batch_size=3,
            gradient_accumulation_steps=4,
            validation_split=0.1,
            checkpoint_every_steps=16,
        ),
        STATS,
        None,
    )
    assert every_16.evaluations == 1  # the last step is a checkpoint: evaluated once
    without = estimate_job(
        config(epochs=2, batch_size=3, gradient_accumulation_steps=4), STATS, None, CPU, evidence=[PACE]
    )
    assert without.gpu_ms == 40_000  # no validation: no evaluations (100 examples trained twice)


def test_a_validation_dataset_is_evaluated_from_its_own_stats_capped_and_dpo_evaluates_both_passes() -> None:
    validation = {"examples": 10, "est_tokens": 5_000}  # 500 tokens an example: capped at 256
    values = {"epochs": 1, "batch_size": 4, "validation_dataset_id": "ds_val", "max_seq_length": 256}
    plan = plan_workload(config(**values), STATS, None, validation=validation)
    # 25 steps, checkpoints every 100: one evaluation at the last step, of 10 x 256 tokens
    assert (plan.eval_examples, plan.evaluations, plan.eval_tokens) == (10, 1, 2_560)
    assert plan.train_examples == 100 and plan.compute_tokens == plan.tokens + -(-2_560 // 3)
    dpo = plan_workload(config(**values, objective="dpo"), STATS, None, validation=validation)
    assert dpo.compute_tokens == -(-(dpo.tokens * 16 + 2_560 * 8) // 9)  # 16/9 trained, 8/9 evaluated
    assert plan_workload(config(**values), STATS, None).compute_tokens == plan.tokens  # its stats unknown
    priced = estimate_job(config(**values), STATS, None, CPU, evidence=[PACE], validation=validation)
    assert priced.gpu_ms == plan.compute_tokens
