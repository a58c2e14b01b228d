"""The engine's decoding loop on a byte-level model: a multi-byte character is sent whole, and one
that ``max_tokens`` cuts in half is left out (never sent as U+FFFD)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from runners.serving.engine import _decode, _Resident
from runtime.serving import ChatMessage, Delta, Generation, ModelRef

EOS = 256


class ByteTokenizer:
    """One token per byte; decoding replaces bytes that are not (yet) a whole character, as byte-level
    BPE tokenizers do."""

    chat_template = None

    def __call__(self, text: str, return_tensors: str) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([list(text.encode())])}

    def decode(self, tokens: list[int], skip_special_tokens: bool) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")


class Scripted:
    """A causal LM that answers ``reply`` byte by byte, then ends."""

    def __init__(self, reply: str) -> None:
        self.script = [*reply.encode(), EOS]

    def __call__(self, input_ids: torch.Tensor, cache: int | None, use_cache: bool,
                 logits_to_keep: int) -> SimpleNamespace:
        step = 0 if cache is None else cache
        logits = torch.zeros(1, 1, EOS + 1)
        logits[0, -1, self.script[min(step, len(self.script) - 1)]] = 1.0
        return SimpleNamespace(cache=step + 1, logits=logits)


def generate(reply: str, max_tokens: int) -> tuple[list[str], str, str]:
    """(deltas sent, the completion's text, its finish reason)."""
    model = Scripted(reply)
    resident = _Resident("base", model, ByteTokenizer(), frozenset({EOS}))
    generation = Generation(model=ModelRef("base", "base"), messages=(ChatMessage("user", "hi"),),
                            temperature=0.0, max_tokens=max_tokens)
    deltas: list[Delta] = []
    completion = _decode(model, resident, generation, deltas.append, threading.Event(), time.perf_counter())
    return [delta.text for delta in deltas], completion.text, completion.finish_reason


@pytest.mark.parametrize(("max_tokens", "text", "finish"), [
    (4, "caf", "length"),  # the fourth byte is half of "é": left out
    (5, "café", "length"),
    (11, "café 😀", "stop"),  # a four-byte character, whole (10 bytes, then the end)
    (9, "café ", "length"),  # ... cut after three of its four bytes
])
def test_a_character_is_sent_whole_or_not_at_all(max_tokens: int, text: str, finish: str) -> None:
    deltas, completed, finished = generate("café 😀", max_tokens)

    assert (completed, finished) == (text, finish)
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
