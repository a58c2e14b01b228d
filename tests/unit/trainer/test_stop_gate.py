"""The stop gate on tiny-llama: an untrained model rambles past the limit, a model trained on
answers that end with the template's end-of-turn marker ends its answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.trainer.recipe import run_training
from runners.trainer.stop_gate import check_stops, end_markers, main
from tests.unit.trainer.conftest import RecordingSink


def test_a_model_that_never_ends_its_answer_fails_the_gate(tiny_llama: Path, capsys) -> None:
    gate = check_stops(tiny_llama, tiny_llama, max_new_tokens=12)  # random weights: no end marker
    assert (gate.stops, gate.new_tokens, gate.max_new_tokens) == (False, 12, 12)
    assert main(["--base", str(tiny_llama), "--model", str(tiny_llama), "--max-new-tokens", "8"]) == 0
    assert '"stops": false' in capsys.readouterr().out


@pytest.mark.slow
def test_a_model_trained_to_end_its_answers_passes_the_gate(make_spec, tiny_llama: Path) -> None:
    done = run_training(make_spec(), RecordingSink())
    assert done.model_dir is not None
    gate = check_stops(tiny_llama, Path(done.model_dir), prompt="What is the secret word?")
    assert gate.stops and gate.new_tokens < gate.max_new_tokens, gate.sample


def test_the_end_markers_are_eos_and_the_templates_turn_end() -> None:
    class Tokenizer:
        chat_template = "{{ '<|im_start|>' + m['role'] }}{{ m['content'] + '<|im_end|>' }}"
        eos_token = "</s>"

    assert end_markers(Tokenizer()) == ["<|im_end|>", "</s>"]
