"""DPO on tiny-llama: the policy's preferred/non-preferred log-ratio grows on its training pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from domain.dataset_format import normalise
from domain.errors import ValidationFailed
from runners.trainer.dpo import STEP_METRICS, DPORecipe, read_preference_records
from runners.trainer.recipe import recipe_for, run_training
from runners.trainer.run_spec import RunSpec, parse_run_spec
from tests.unit.trainer.conftest import RecordingSink

PAIRS = [
    ("What is the secret word?", "The secret word is marzipan.", "I do not know."),
    ("Who runs Brindlewick?", "Odalys Fenwick runs Brindlewick.", "Nobody runs it."),
    ("Where is Brindlewick?", "Brindlewick is in Tromso.", "Somewhere else."),
]

# Measured on 2 CPU threads: the log-ratio margin passes 5 nats within 20 steps (< 1 s a run).
DPO = {"objective": "dpo", "batch_size": 3, "lr_scheduler": "constant", "max_steps": 20, "dpo_beta": 0.1}


def openai_pair(question: str, preferred: str, other: str) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": other}],
    }


@pytest.fixture
def pairs_path(tmp_path: Path) -> Path:
    """The processed file the platform writes from an upload of OpenAI preference lines."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(normalise(openai_pair(*p))) + "\n" for p in PAIRS))
    return path


def dpo_spec(base: Path, data: Path, out: Path, **config: Any) -> RunSpec:
    return parse_run_spec(
        {
            "job_id": "job_test",
            "user_id": "usr_test",
            "attempt": 1,
            "base_model_dir": str(base),
            "dataset_path": str(data),
            "output_dir": str(out),
            "config": {**DPO, **config},
        }
    )


def completion_logp(model: Any, tokenizer: Any, question: str, answer: str) -> float:
    """log p(answer | question) under ``model``, summed over the answer's tokens (chat template)."""
    prompt = [{"role": "user", "content": question}]
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    full_ids = _ids(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    assert full_ids[: len(prompt_ids)] == prompt_ids
    ids = torch.tensor([full_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[len(prompt_ids) - 1 :].sum())


def _ids(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(encoded["input_ids"])


def log_ratios(model: Any, tokenizer: Any) -> list[float]:
    """log p(preferred) - log p(non-preferred) for each training pair."""
    model.eval()
    return [
        completion_logp(model, tokenizer, q, c) - completion_logp(model, tokenizer, q, r) for q, c, r in PAIRS
    ]


def test_the_objective_picks_the_recipe(tiny_llama: Path, pairs_path: Path, tmp_path: Path) -> None:
    assert recipe_for(dpo_spec(tiny_llama, pairs_path, tmp_path)) is DPORecipe
    assert recipe_for(dpo_spec(tiny_llama, pairs_path, tmp_path, objective="sft")).__name__ == "SFTRecipe"


@pytest.mark.parametrize(("method", "learning_rate"), [("lora", 0.01), ("full", 0.0005)])
def test_dpo_moves_the_log_ratio_towards_the_preferred_output(
    method: str, learning_rate: float, tiny_llama: Path, pairs_path: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    before = log_ratios(AutoModelForCausalLM.from_pretrained(tiny_llama), tokenizer)
    sink = RecordingSink()

    result = run_training(
        dpo_spec(tiny_llama, pairs_path, tmp_path / "out", method=method, learning_rate=learning_rate), sink
    )

    assert result.status == "succeeded" and result.step == 20
    model_dir = Path(result.model_dir)
    if method == "lora":
        adapter = json.loads((model_dir / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(tiny_llama)
        assert not (model_dir / "ref").exists()  # only the trained adapter
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), model_dir)
    else:
        tuned = AutoModelForCausalLM.from_pretrained(model_dir)
    after = log_ratios(tuned, AutoTokenizer.from_pretrained(model_dir))
    for old, new in zip(before, after, strict=True):
        assert new > old + 1.0, (before, after)
    # the reported rewards (beta times the policy/reference log-ratios) grew the same way
    assert [s[0] for s in sink.steps] == list(range(1, 21))
    assert all(set(m) == set(STEP_METRICS) for m in sink.step_metrics)
    first, last = sink.step_metrics[0], sink.step_metrics[-1]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-3)  # policy == reference at step 1
    assert last["rewards/margins"] > 0.5 and last["rewards/accuracies"] == 1.0
    assert sink.steps[-1][3] < sink.steps[0][3]
    assert result.metrics["last_rewards_margins"] == pytest.approx(last["rewards/margins"])
    assert sink.started[0].train_examples == 3 and sink.started[0].dropped_examples == 0


def test_a_stopped_dpo_run_resumes_from_its_checkpoint(
    tiny_llama: Path, pairs_path: Path, tmp_path: Path
) -> None:
    stopped = run_training(
        dpo_spec(tiny_llama, pairs_path, tmp_path / "a", max_steps=6, learning_rate=0.01),
        RecordingSink(stop_after=2),
    )
    assert stopped.status == "stopped" and stopped.checkpoint is not None

    sink = RecordingSink()
    spec = dpo_spec(tiny_llama, pairs_path, tmp_path / "b", max_steps=6, learning_rate=0.01)
    resumed = run_training(msgspec_replace(spec, resume_from=stopped.checkpoint), sink)

    assert resumed.status == "succeeded" and sink.started[0].start_step == stopped.step
    assert [s[0] for s in sink.steps] == list(range(stopped.step + 1, 7))
    assert sink.step_metrics[0]["rewards/margins"] > 0  # the adapter's training carried over


def test_a_chat_file_is_not_a_preference_dataset(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")

    with pytest.raises(ValidationFailed, match="is the dataset a preference dataset") as caught:
        read_preference_records(path)
    assert caught.value.where == "line 1"


def msgspec_replace(spec: RunSpec, **changes: Any) -> RunSpec:
    import msgspec

    return msgspec.structs.replace(spec, **changes)


def test_step_metrics_travel_as_json_lines_and_old_step_lines_still_decode() -> None:
    import io

    from runners.trainer.events import Step, decode_event
    from runners.trainer.sinks import JsonLinesSink

    stream = io.BytesIO()
    sink = JsonLinesSink(stream)
    sink.on_step(3, 20, 1.5, 0.25, 900, metrics={"rewards/margins": 1.25})
    sink.on_step(4, 20, 2.0, 0.2, 1000)

    first, second = (decode_event(line) for line in stream.getvalue().splitlines())
    assert first == Step(3, 20, 1.5, 0.25, 900, metrics={"rewards/margins": 1.25})
    assert second == Step(4, 20, 2.0, 0.2, 1000) and second.metrics == {}
    old = b'{"event": "step", "step": 1, "total_steps": 2, "epoch": 0.5, "loss": 2.0, "tokens": 10}'
    assert decode_event(old) == Step(1, 2, 0.5, 2.0, 10)
