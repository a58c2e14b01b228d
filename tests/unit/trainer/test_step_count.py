"""The estimate's step count is the trainer's: epochs, max_steps, gradient accumulation, validation split.

Each case builds the real recipe (tiny-llama, no training) and asks transformers' ``Trainer`` how many
optimizer steps it will take; ``domain.estimate.plan_workload`` must say the same from the dataset's
stats alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.estimate import plan_workload
from domain.training_config import parse_training_config
from runners.trainer.recipe import SFTRecipe, quiet_library_noise
from runners.trainer.run_spec import parse_run_spec
from tests.unit.trainer.conftest import RecordingSink, chat

CASES = [
    # examples, config
    (11, {"epochs": 3, "batch_size": 4}),
    (11, {"epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 3}),
    (11, {"epochs": 1, "batch_size": 4, "gradient_accumulation_steps": 4}),
    (11, {"epochs": 3, "batch_size": 4, "max_steps": 400}),  # max_steps overrides the epochs, even upwards
    (11, {"epochs": 5, "batch_size": 2, "max_steps": 3}),
    (11, {"epochs": 2, "batch_size": 3, "validation_split": 0.2}),
    (7, {"epochs": 2, "batch_size": 1, "gradient_accumulation_steps": 2, "validation_split": 0.1}),
    (2, {"epochs": 3, "batch_size": 8, "gradient_accumulation_steps": 8}),
]


@pytest.mark.parametrize(("examples", "config"), CASES)
def test_the_estimate_counts_the_steps_the_trainer_takes(
    examples: int, config: dict[str, Any], tiny_llama: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(
        "".join(json.dumps(chat(f"Question {i}?", f"Answer number {i}.")) + "\n" for i in range(examples))
    )
    spec = parse_run_spec(
        {
            "job_id": "job_test",
            "user_id": "usr_test",
            "attempt": 1,
            "base_model_dir": str(tiny_llama),
            "dataset_path": str(dataset),
            "output_dir": str(tmp_path / "out"),
            "config": {"checkpoint_every_steps": 1000, **config},
        }
    )
    recipe = SFTRecipe(spec, RecordingSink())
    with quiet_library_noise():
        recipe.setup()
    trainer = recipe.trainer
    assert trainer is not None and recipe.data is not None
    trainer_steps = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]

    plan = plan_workload(
        parse_training_config(config), {"examples": examples, "est_tokens": 10 * examples}, None
    )

    assert (plan.train_examples, plan.eval_examples) == (len(recipe.data.train), len(recipe.data.eval))
    assert plan.steps == trainer_steps
