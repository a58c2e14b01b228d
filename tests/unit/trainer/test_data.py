"""Chat SFT tokenisation: the loss is taken on assistant tokens only, whatever the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from domain.errors import ValidationFailed
from runners.base_models.tiny_llama import CHATML_TEMPLATE
from runners.trainer.data import (
    IGNORE_INDEX,
    ChatCollator,
    ensure_chat_template,
    prepare_sft_data,
    read_chat_records,
    tokenize_chat,
)

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question?"},
    {"role": "assistant", "content": "Second answer."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path):
    return AutoTokenizer.from_pretrained(tiny_llama)


def _learnt(tokenizer, example: dict) -> str:
    return tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX])


def test_labels_cover_each_assistant_turn_and_its_end_token_only(tokenizer) -> None:
    example = tokenize_chat(tokenizer, CONVERSATION, max_length=1024)

    assert _learnt(tokenizer, example) == "First answer.<|im_end|>\nSecond answer.<|im_end|>\n"
    assert len(example["labels"]) == len(example["input_ids"])
    kept = [i for i, t in zip(example["input_ids"], example["labels"], strict=True) if t != IGNORE_INDEX]
    assert kept == [t for t in example["labels"] if t != IGNORE_INDEX]  # labels are the ids themselves


def test_a_template_that_rewrites_history_falls_back_to_the_message_text(tokenizer) -> None:
    # Marks only the last assistant turn differently, so rendering a prefix is not a prefix of the whole.
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}[final]{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    example = tokenize_chat(tokenizer, CONVERSATION, max_length=1024)
    learnt = _learnt(tokenizer, example)
    assert "First answer." in learnt and "Second answer." in learnt
    assert "question" not in learnt and "terse" not in learnt


def test_truncation_that_leaves_no_assistant_token_drops_the_example(tokenizer) -> None:
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Yes."}]
    assert tokenize_chat(tokenizer, long_prompt, max_length=64) is None
    data = prepare_sft_data([long_prompt, CONVERSATION], tokenizer, max_length=64, validation_split=0, seed=1)
    assert data.dropped == 1 and len(data.train) == 1 and len(data.train[0]["input_ids"]) == 64


def test_the_validation_split_is_disjoint_and_fixed_by_the_seed(tokenizer) -> None:
    records = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(20)
    ]
    a = prepare_sft_data(records, tokenizer, max_length=64, validation_split=0.25, seed=7)
    b = prepare_sft_data(records, tokenizer, max_length=64, validation_split=0.25, seed=7)
    c = prepare_sft_data(records, tokenizer, max_length=64, validation_split=0.25, seed=8)
    assert (len(a.train), len(a.eval)) == (15, 5)
    assert a == b and a.eval != c.eval
    assert not {tuple(e["input_ids"]) for e in a.eval} & {tuple(e["input_ids"]) for e in a.train}


def test_a_split_that_leaves_nothing_to_train_on_is_refused(tokenizer) -> None:
    with pytest.raises(ValidationFailed) as caught:
        prepare_sft_data([CONVERSATION], tokenizer, max_length=64, validation_split=0.5, seed=1)
    assert caught.value.where == "validation_split"


def test_the_collator_right_pads_with_ignored_labels() -> None:
    batch = ChatCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [9], "labels": [9]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [9, -100, -100]]
    assert ChatCollator(0, pad_to_multiple_of=8)([{"input_ids": [1], "labels": [1]}])["input_ids"].shape == (
        1,
        8,
    )


def test_records_are_read_and_bad_lines_are_named(tmp_path: Path) -> None:
    good = {"messages": CONVERSATION[1:3]}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert read_chat_records(path) == [CONVERSATION[1:3]] * 2

    for bad in ('{"text": "hi"}', '{"messages": [{"role": "user", "content": "no answer"}]}', "not json"):
        path.write_text(json.dumps(good) + "\n" + bad + "\n")
        with pytest.raises(ValidationFailed) as caught:
            read_chat_records(path)
        assert caught.value.where == "line 2"


def test_a_tokenizer_without_a_template_gets_chatml(tokenizer) -> None:
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    ensure_chat_template(bare)
    assert bare.chat_template == CHATML_TEMPLATE
