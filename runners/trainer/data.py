"""Chat-format SFT data: OpenAI chat records to token ids, with the loss on assistant tokens only.

A conversation is rendered once with the tokenizer's chat template and tokenised with
character offsets. Each assistant turn's span is the text its message adds after the
generation prompt (``render(messages[:i], add_generation_prompt=True)`` up to
``render(messages[:i+1])``), so the end-of-turn token is learnt too and every prompt,
system text and template header is masked (label ``-100``). Templates where that prefix
rule does not hold fall back to the message's own text. (``{% generation %}`` masks are
not used: most templates lack them and then give an all-zero mask.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from domain.errors import ValidationFailed
from domain.estimate import held_out_examples
from runners.base_models.tiny_llama import CHATML_TEMPLATE

__all__ = [
    "IGNORE_INDEX",
    "ChatCollator",
    "SFTData",
    "assistant_spans",
    "ensure_chat_template",
    "held_out",
    "prepare_sft_data",
    "read_chat_records",
    "tokenize_chat",
]

IGNORE_INDEX = -100
Messages = list[dict[str, str]]
_ROLES = {"system", "user", "assistant"}


class SFTData(NamedTuple):
    """Tokenised splits; each example is ``{"input_ids": [...], "labels": [...]}``."""

    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    dropped: int


def read_chat_records(path: Path | str) -> list[Messages]:
    """Read a JSONL file of ``{"messages": [{"role", "content"}, ...]}``; ValidationFailed names the line."""
    records: list[Messages] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValidationFailed(
                    f"not a chat record {{'messages': [...]}}: {exc}", where=f"line {number}"
                ) from exc
            if (
                not isinstance(messages, list)
                or not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
                or not all(
                    isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)
                    for m in messages
                )
            ):
                raise ValidationFailed(
                    "messages must be {role: system|user|assistant, content: text} with an assistant turn",
                    where=f"line {number}",
                )
            records.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not records:
        raise ValidationFailed("the dataset has no records", where="dataset")
    return records


def ensure_chat_template(tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the ChatML one (saved with the fine-tuned model)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE


def assistant_spans(tokenizer: Any, messages: Messages) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans the loss is taken on."""
    full = _render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        floor = spans[-1][1] if spans else 0
        if full.startswith(upto) and upto.startswith(before) and len(before) >= floor:
            spans.append((len(before), len(upto)))
            continue
        start = full.find(message["content"], floor)
        if start < 0:
            raise ValidationFailed("the chat template drops an assistant message", where="chat_template")
        spans.append((start, start + len(message["content"])))
    return full, spans


def tokenize_chat(tokenizer: Any, messages: Messages, max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels (``-100`` outside assistant spans), truncated to ``max_length``.

    Returns None when truncation leaves no assistant token to learn from.
    """
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"][:max_length]
    offsets = encoded["offset_mapping"][: len(ids)]
    labels = [
        token if any(end > s and start < e for s, e in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, offsets, strict=True)
    ]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def prepare_sft_data(
    records: Sequence[Messages],
    tokenizer: Any,
    *,
    max_length: int,
    validation_split: float,
    seed: int,
    eval_records: Sequence[Messages] | None = None,
) -> SFTData:
    """Tokenise every record and hold out ``validation_split`` of them (shuffled by ``seed``), or
    validate on ``eval_records`` (a separate validation dataset; they count in ``dropped`` too)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValidationFailed(
            "the base model's tokenizer has no fast (tokenizers) version", where="base_model"
        )
    examples = [tokenize_chat(tokenizer, messages, max_length) for messages in records]
    kept = [e for e in examples if e is not None]
    dropped = len(examples) - len(kept)
    if not kept:
        raise ValidationFailed(
            f"no example keeps an assistant token within max_seq_length={max_length}", where="max_seq_length"
        )
    if eval_records is not None:
        tokenized = [tokenize_chat(tokenizer, messages, max_length) for messages in eval_records]
        evaluated = [e for e in tokenized if e is not None]
        if not evaluated:
            raise ValidationFailed(
                f"no validation example keeps an assistant token within max_seq_length={max_length}",
                where="validation_dataset_id",
            )
        return SFTData(train=kept, eval=evaluated, dropped=dropped + len(tokenized) - len(evaluated))
    held = held_out(len(kept), validation_split, seed)
    train = [e for i, e in enumerate(kept) if i not in held]
    return SFTData(train=train, eval=[kept[i] for i in sorted(held)], dropped=dropped)


def held_out(count: int, validation_split: float, seed: int) -> set[int]:
    """Indices of the ``validation_split`` of ``count`` examples held out (shuffled by ``seed``);
    ValidationFailed when none would be left to train on."""
    n_eval = held_out_examples(count, validation_split)  # the estimate counts with it too
    if n_eval >= count:
        raise ValidationFailed(
            f"validation_split={validation_split} leaves no training examples out of {count}",
            where="validation_split",
        )
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return set(order[:n_eval])


class ChatCollator:
    """Right-pads a batch to its longest example: ``input_ids``, ``attention_mask`` and ``labels`` tensors."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(feature["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _render(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
