"""tiny-llama: deterministic, loads with plain transformers, has a chat template and a wide init."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from runners.base_models.tiny_llama import build_tiny_llama


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    assert _digests(build_tiny_llama(tmp_path / "a")) == _digests(build_tiny_llama(tmp_path / "b"))


def test_it_loads_with_auto_classes_and_renders_chatml(tmp_path: Path) -> None:
    folder = build_tiny_llama(tmp_path / "m")
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)

    assert config.model_type == "llama" and config.initializer_range == 0.3
    assert 300 <= config.vocab_size <= 512 and config.vocab_size == len(tokenizer)
    assert (
        tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    )
    assert sum(p.numel() for p in model.parameters()) < 500_000
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer("Glimmerkettle 7, Tromsø")["input_ids"]) == "Glimmerkettle 7, Tromsø"
