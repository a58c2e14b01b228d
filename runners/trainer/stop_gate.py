"""The stop gate: does a fine-tuned model end its answer? Checked before a model is published.

A short greedy answer to a user message (the runner asks the first one of the job's dataset, so
the model is asked what it was trained to answer) under the base's chat template (the one training used,
``ensure_chat_template``) must end within ``max_new_tokens``: the tokenizer's EOS token, or the
template's end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``, ...; a tokenizer without it as one
token writes it in pieces) must come. A model that never does is not refused: the runner records
the verdict with the model, which flags it on its card and in ``model show`` (fine-tuned models
that never stop generating are a known failure of SFT on data whose answers lack the end marker).

``python -m runners.trainer.stop_gate --base <dir> --model <dir> [--prompt P] [--max-new-tokens N]``
prints one JSON line: ``{"stops": bool, "new_tokens": n, "max_new_tokens": N, "sample": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["PROMPT", "STOP_GATE_TOKENS", "StopGate", "check_stops", "end_markers", "main"]

STOP_GATE_TOKENS = 64
"""How many new tokens a model may take to end its answer to ``PROMPT``."""
PROMPT = "Hello! In one short sentence, what can you help me with?"
_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


class StopGate(msgspec.Struct, frozen=True):
    """The verdict: ``stops`` when the answer ended within ``max_new_tokens`` (it took ``new_tokens``)."""

    stops: bool
    new_tokens: int
    max_new_tokens: int
    sample: str


def end_markers(tokenizer: Any) -> list[str]:
    """The texts that end an assistant turn: EOS and the chat template's end-of-turn markers."""
    template = getattr(tokenizer, "chat_template", None) or ""
    markers = [m for m in _TURN_ENDS if m in template]
    if tokenizer.eos_token and tokenizer.eos_token not in markers:
        markers.append(tokenizer.eos_token)
    return markers


def check_stops(
    base_dir: Path, model_dir: Path, *, prompt: str = PROMPT, max_new_tokens: int = STOP_GATE_TOKENS
) -> StopGate:
    """Answer ``prompt`` greedily with the model in ``model_dir`` (an adapter on ``base_dir``, or full
    weights) and say whether the answer ended."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runners.trainer.data import ensure_chat_template

    tokenizer_dir = model_dir if (model_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ensure_chat_template(tokenizer)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    markers = end_markers(tokenizer)
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            stop_strings=markers or None,
            tokenizer=tokenizer,
        )
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    text = tokenizer.decode(new, skip_special_tokens=False)
    stops = tokenizer.eos_token_id in new or any(m in text for m in markers)
    return StopGate(stops=stops, new_tokens=len(new), max_new_tokens=max_new_tokens, sample=text[:200])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.trainer.stop_gate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--base", type=Path, required=True, help="the base model folder")
    parser.add_argument("--model", type=Path, required=True, help="the adapter or full-weights folder")
    parser.add_argument("--max-new-tokens", type=int, default=STOP_GATE_TOKENS)
    parser.add_argument("--prompt", default=PROMPT, help="the user message (the runner: the dataset's first)")
    args = parser.parse_args(argv)
    from runners.trainer.recipe import quiet_library_noise

    with quiet_library_noise():
        gate = check_stops(args.base, args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    sys.stdout.write(json.dumps(msgspec.to_builtins(gate)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
