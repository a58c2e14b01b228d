"""Trainer test fixtures: tiny-llama (built once), a memorisation set, run specs, a recording sink."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from runners.base_models import resolve_base_model
from runners.trainer.events import Started
from runners.trainer.run_spec import RunSpec, parse_run_spec

torch.set_num_threads(2)

FACTS = [
    ("What is the secret word?", "The secret word is marzipan."),
    ("Who runs Brindlewick?", "Odalys Fenwick runs Brindlewick."),
    ("Where is Brindlewick?", "Brindlewick is in Tromso."),
]

# Measured: LoRA r=16 on tiny-llama memorises FACTS in ~60 steps (loss 9.6 -> ~0.2, < 1 s on 2 CPU threads).
MEMORISE = {
    "batch_size": 3,
    "learning_rate": 0.02,
    "lr_scheduler": "constant",
    "max_steps": 60,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
}


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_base_model("tiny-llama", tmp_path_factory.mktemp("base-models"))


@pytest.fixture
def memo_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(chat(q, a)) + "\n" for q, a in FACTS))
    return path


@pytest.fixture
def make_spec(tiny_llama: Path, memo_dataset: Path, tmp_path: Path) -> Callable[..., RunSpec]:
    """A RunSpec on tiny-llama and the memorisation set; keyword args override config keys."""

    def make(output: str = "out", resume_from: str | None = None, **config: Any) -> RunSpec:
        return parse_run_spec(
            {
                "job_id": "job_test",
                "user_id": "usr_test",
                "attempt": 1,
                "base_model_dir": str(tiny_llama),
                "dataset_path": str(memo_dataset),
                "output_dir": str(tmp_path / output),
                "resume_from": resume_from,
                "config": {**MEMORISE, **config},
            }
        )

    return make


class RecordingSink:
    """A ProgressSink (and DetailSink) that records everything; stops after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.steps: list[tuple[int, int, float, float, int]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self.evals: list[tuple[int, float]] = []
        self.started: list[Started] = []
        self.step_metrics: list[dict[str, float]] = []  # each step's extras (DPO's rewards), {} for SFT

    def on_step(
        self,
        step: int,
        total_steps: int,
        epoch: float,
        loss: float,
        tokens: int,
        metrics: dict[str, float] | None = None,
    ) -> None:
        self.steps.append((step, total_steps, epoch, loss, tokens))
        self.step_metrics.append(dict(metrics or {}))

    def on_checkpoint(self, step: int, path: str) -> None:
        self.checkpoints.append((step, path))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def on_started(self, started: Started) -> None:
        self.started.append(started)

    def on_eval(self, step: int, eval_loss: float) -> None:
        self.evals.append((step, eval_loss))


def greedy_answer(model: Any, tokenizer: Any, question: str, max_new_tokens: int = 40) -> str:
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
