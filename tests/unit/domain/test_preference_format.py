"""OpenAI's preference (DPO) lines: detected, checked line by line, normalised to TRL's pair form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domain.dataset_format import OBJECTIVE_FORMATS, DatasetValidator, normalise, validate_lines
from domain.errors import ValidationFailed

PAIR: dict[str, Any] = {
    "input": {"messages": [{"role": "user", "content": "Capital of France?"}], "tools": []},
    "preferred_output": [{"role": "assistant", "content": "Paris."}],
    "non_preferred_output": [{"role": "assistant", "content": "Lyon, I think."}],
}


def line(record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


def pair(**changes: Any) -> dict[str, Any]:
    record = json.loads(json.dumps(PAIR))
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


def test_a_file_of_pairs_is_a_preference_dataset_with_stats() -> None:
    report = validate_lines([line(PAIR)] * 10)

    assert report.ok and report.format == "preference" and report.rows == 10
    assert report.stats.examples == 10 and report.stats.messages == 30
    assert report.stats.role_counts == {"assistant": 20, "user": 10}
    content = len("Capital of France?") + len("Paris.") + len("Lyon, I think.")
    assert report.stats.content_bytes == 10 * content and report.stats.est_tokens > 0
    assert OBJECTIVE_FORMATS["dpo"] == ("preference",) and "preference" not in OBJECTIVE_FORMATS["sft"]


def test_a_pair_normalises_to_trls_conversational_form() -> None:
    system = {"role": "system", "content": "Answer in one word."}
    record = pair(input={"messages": [system, *PAIR["input"]["messages"]], "parallel_tool_calls": False})
    record["id"] = "p-1"

    assert normalise(record) == {
        "prompt": [system, {"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon, I think."}],
    }
    assert DatasetValidator().feed_line(line(record)) == normalise(record)


def test_a_multi_turn_prompt_ending_on_the_user_is_fine() -> None:
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert normalise(pair(input={"messages": turns}))["prompt"] == turns


BAD = [
    (pair(input=None), "has no 'input'"),
    (pair(input="Capital of France?"), "'input' must be an object with 'messages' (got string)"),
    (pair(input={"prompt": "x"}), "'input' has no 'messages'"),
    (pair(input={"messages": []}), "'input.messages' is empty"),
    (pair(input={"messages": {"role": "user"}}), "'input.messages' must be a list"),
    (
        pair(input={"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        "input.messages ends with an assistant message",
    ),
    (pair(input={"messages": [{"role": "robot", "content": "a"}]}), "message 1 has unknown role 'robot'"),
    (
        pair(input={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
        "messages 1 and 2 are both user",
    ),
    (pair(preferred_output=None), "has no 'preferred_output'"),
    (pair(non_preferred_output=None), "has no 'non_preferred_output'"),
    (
        pair(preferred_output={"role": "assistant", "content": "x"}),
        "exactly one assistant message (got object)",
    ),
    (pair(preferred_output=[]), "'preferred_output' must be a list of exactly one assistant message (got 0"),
    (
        pair(non_preferred_output=[{"role": "assistant", "content": "a"}] * 2),
        "'non_preferred_output' must be a list of exactly one assistant message (got 2 messages)",
    ),
    (
        pair(preferred_output=[{"role": "user", "content": "x"}]),
        "preferred_output: message 1 is a user message",
    ),
    (
        pair(non_preferred_output=[{"role": "assistant", "content": " "}]),
        "non_preferred_output: message 1 'content' is empty",
    ),
    (
        pair(preferred_output=[{"role": "assistant", "content": "x", "weight": 1}]),
        "preferred_output: message 1 has a 'weight'",
    ),
    (pair(non_preferred_output=PAIR["preferred_output"]), "are the same; a pair must differ"),
]


@pytest.mark.parametrize(("record", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_pair_is_reported_at_its_line_naming_the_field(record: dict[str, Any], message: str) -> None:
    lines = [line(PAIR)] * 10
    lines[6] = line(record)

    report = validate_lines(lines)

    assert not report.ok and report.error_count == 1
    assert report.errors[0].line == 7 and message in report.errors[0].message, report.errors[0]
    with pytest.raises(ValidationFailed, match="record"):
        normalise(record)


def test_pairs_and_chat_lines_do_not_mix() -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    report = validate_lines([line(PAIR)] * 10 + [line(chat)])

    assert [(e.line, e.message) for e in report.errors] == [
        (11, "format chat differs from the file's format preference (line 1); mixed formats are not allowed")
    ]
    half = {"messages": chat["messages"], "preferred_output": PAIR["preferred_output"]}
    assert "more than one format (chat, preference)" in validate_lines([line(half)] * 10).errors[0].message
