"""Dataset format rules: what a user uploading a JSONL file is told, line by line."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from domain.dataset_format import (
    DatasetStats,
    DatasetValidator,
    LineError,
    detect_format,
    estimate_tokens,
    normalise,
    split_lines,
    validate_lines,
)
from domain.errors import ValidationFailed

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
PC = {"prompt": "2+2?", "completion": " 4"}
TEXT = {"text": "Once upon a time."}


def line(record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


def dataset(record: Any = CHAT, n: int = 10) -> list[bytes]:
    return [line(record)] * n


def with_line(lines: list[bytes], at: int, raw: bytes) -> list[bytes]:
    """``lines`` with 1-based line ``at`` replaced by ``raw``."""
    return [*lines[: at - 1], raw, *lines[at:]]


def only_error(lines: list[bytes], **limits: Any) -> LineError:
    report = validate_lines(lines, **limits)
    assert not report.ok
    assert report.error_count == 1, report.errors
    return report.errors[0]


# --- valid files -------------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "fmt"), [(CHAT, "chat"), (PC, "prompt_completion"), (TEXT, "text")])
def test_each_format_is_detected_and_passes(record: dict[str, Any], fmt: str) -> None:
    report = validate_lines(dataset(record))

    assert report.ok
    assert (report.format, report.rows, report.errors, report.error_count) == (fmt, 10, [], 0)


def test_stats_describe_the_examples() -> None:
    system_chat = {"messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    report = validate_lines([*dataset(CHAT, 6), *dataset(system_chat, 4)])

    stats = report.stats
    assert report.ok
    assert (stats.examples, stats.messages, stats.min_messages, stats.max_messages) == (10, 24, 2, 3)
    assert stats.mean_messages == 2.4
    assert stats.role_counts == {"assistant": 10, "system": 4, "user": 10}
    assert stats.content_bytes == 10 * len("HiHello!") + 4 * len("Be brief.")
    assert stats.max_line_bytes == len(line(system_chat)) - 1
    assert stats.est_tokens == estimate_tokens(stats) == -(-stats.content_bytes // 4) + 4 * 24


def test_estimate_tokens_counts_utf8_bytes_and_message_overhead() -> None:
    assert estimate_tokens(DatasetStats(content_bytes=0, messages=0)) == 0
    assert estimate_tokens(DatasetStats(content_bytes=9, messages=2)) == 3 + 8
    report = validate_lines(dataset({"text": "é" * 4}, 10))  # 8 bytes each
    assert report.stats.content_bytes == 80
    assert report.stats.est_tokens == 20 + 40


def test_report_is_a_msgspec_struct_that_round_trips() -> None:
    report = validate_lines([*dataset(), b"oops\n"])

    assert msgspec.json.decode(msgspec.json.encode(report), type=type(report)) == report


def test_crlf_endings_bom_and_trailing_blank_lines_are_accepted() -> None:
    lines = [raw.replace(b"\n", b"\r\n") for raw in dataset()]
    lines[0] = b"\xef\xbb\xbf" + lines[0]

    report = validate_lines([*lines, b"\n", b"  \r\n"])

    assert report.ok
    assert report.rows == 10


def test_unknown_top_level_keys_are_allowed_and_dropped() -> None:
    record = {**CHAT, "id": 7, "metadata": {"source": "x"}}

    assert validate_lines(dataset(record)).ok
    assert normalise(record) == CHAT


def test_tool_role_only_when_allowed() -> None:
    record = {
        "messages": [
            *CHAT["messages"],
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]
    }

    assert validate_lines(dataset(record), allow_tool_role=True).ok
    error = only_error(with_line(dataset(), 4, line(record)))
    assert error.line == 4
    assert "unknown role 'tool'" in error.message


def test_name_and_weight_are_kept() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "q", "name": "ann"},
            {"role": "assistant", "content": "a", "weight": 0},
        ]
    }

    assert validate_lines(dataset(record)).ok
    assert normalise(record) == record


# --- normalisation -------------------------------------------------------------------------------


def test_prompt_completion_becomes_user_then_assistant_with_contents_unchanged() -> None:
    assert normalise(PC) == {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": " 4"}]
    }


def test_text_becomes_one_assistant_message() -> None:
    assert normalise(TEXT) == {"messages": [{"role": "assistant", "content": "Once upon a time."}]}


def test_feed_line_returns_the_processed_record_or_none() -> None:
    validator = DatasetValidator(min_examples=1)

    assert validator.feed_line(line(PC)) == normalise(PC)
    assert validator.feed_line(b"\n") is None
    assert validator.feed_line(b"{}") is None
    assert not validator.finish().ok


def test_normalise_and_detect_format_reject_bad_records() -> None:
    with pytest.raises(ValidationFailed, match="no assistant message"):
        normalise({"messages": [{"role": "user", "content": "q"}]})
    with pytest.raises(ValidationFailed, match="more than one format"):
        detect_format({"text": "a", "prompt": "b", "completion": "c"})
    assert detect_format(PC) == "prompt_completion"


# --- malformed files: one clear error naming the line ---------------------------------------------


def chat(*messages: Any) -> dict[str, Any]:
    return {"messages": list(messages)}


def msg(role: str, content: Any = "x", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


ANSWER = msg("assistant", "y")
BAD_CHAT_RECORDS = {
    "unknown role": (chat(msg("bot"), ANSWER), "unknown role 'bot'"),
    "missing role": (chat({"content": "x"}, ANSWER), "message 1 has no 'role'"),
    "missing content": (chat({"role": "user"}, ANSWER), "message 1 has no 'content'"),
    "null content": (chat(msg("user", None), ANSWER), "'content' must be a string (got null)"),
    "list content": (chat(msg("user", ["x"]), ANSWER), "'content' must be a string (got array)"),
    "empty content": (chat(msg("user", ""), ANSWER), "message 1 'content' is empty"),
    "blank content": (chat(msg("user"), msg("assistant", " \n")), "message 2 'content' is empty"),
    "no assistant": (chat(msg("system"), msg("user")), "no assistant message"),
    "consecutive roles": (chat(msg("user"), msg("user"), ANSWER), "messages 1 and 2 are both user"),
    "late system": (chat(msg("user"), ANSWER, msg("system")), "message 3 is a system message"),
    "messages not a list": ({"messages": "hi"}, "'messages' must be a list"),
    "messages empty": (chat(), "'messages' is empty"),
    "message not object": (chat("hi", ANSWER), "message 1 is not a JSON object"),
    "unknown message key": (chat(msg("user", tool_calls=[]), ANSWER), "unknown key(s) 'tool_calls'"),
    "weight on user": (chat(msg("user", weight=1), ANSWER), "only assistant messages may"),
    "weight not 0/1": (chat(msg("user"), msg("assistant", weight=0.5)), "'weight' must be 0 or 1"),
    "weight bool": (chat(msg("user"), msg("assistant", weight=True)), "'weight' must be 0 or 1"),
    "empty name": (chat(msg("user", name=""), ANSWER), "'name' must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHAT_RECORDS))
def test_a_bad_chat_record_is_reported_at_its_line(case: str) -> None:
    record, expected = BAD_CHAT_RECORDS[case]

    error = only_error(with_line(dataset(n=12), 7, line(record)))

    assert error.line == 7
    assert expected in error.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"messages": [{"role": "user", "content": "trunc', "not valid JSON"),
        (b"\xff\xfe{}\n", "not valid UTF-8 (byte 1 of the line)"),
        (b'{"text": "caf\xc3"}', "not valid UTF-8 (byte 14 of the line)"),
        (b'[{"role": "user"}]\n', "expected a JSON object, got array"),
        (b'"just a string"\n', "expected a JSON object, got string"),
        (b'{"a": 1}{"b": 2}\n', "not valid JSON"),
        (b'{"input": "x", "output": "y"}\n', "no known format"),
        (b'{"messages": [], "text": "x"}\n', "more than one format"),
        (line(PC), "format prompt_completion differs from the file's format chat"),
        (b"[" * 1000 + b"]" * 1000 + b"\n", "JSON nested deeper than 64 levels"),
        (b'{"text": "x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested deeper"),
    ],
)
def test_a_malformed_line_is_reported_at_its_line(raw: bytes, expected: str) -> None:
    error = only_error(with_line(dataset(n=12), 5, raw))

    assert error.line == 5
    assert expected in error.message


@pytest.mark.parametrize(
    ("base", "record", "expected"),
    [
        (PC, {"prompt": "p"}, "has no 'completion'"),
        (PC, {"prompt": "p", "completion": ""}, "'completion' is empty"),
        (PC, {"prompt": 1, "completion": "c"}, "'prompt' must be a string (got number)"),
        (TEXT, {"text": 3}, "'text' must be a string (got number)"),
        (TEXT, {"text": "\t"}, "'text' is empty"),
    ],
)
def test_a_bad_prompt_completion_or_text_record_is_reported(
    base: dict[str, Any], record: dict[str, Any], expected: str
) -> None:
    error = only_error(with_line(dataset(base, 12), 8, line(record)))

    assert error.line == 8
    assert expected in error.message


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine() -> None:
    deep = {"text": "x", "metadata": json.loads("[" * 63 + "]" * 63)}
    brackets = {"text": "[" * 5000 + "{" * 5000}

    report = validate_lines([line(deep), line(brackets), *dataset(TEXT, 10)])

    assert report.ok, report.errors


def test_mixed_formats_name_the_line_that_fixed_the_format() -> None:
    error = only_error([line(TEXT), *dataset(TEXT, 11), line(CHAT)])

    assert error.line == 13
    assert error.message.startswith("format chat differs from the file's format text (line 1)")


def test_a_huge_line_is_rejected_without_parsing() -> None:
    huge = line({"text": "x" * 2000})

    error = only_error(with_line(dataset(TEXT, 12), 3, huge), max_line_bytes=1000)

    assert error == LineError(3, "line is longer than the limit of 1,000 bytes")


def test_blank_lines_in_the_middle_are_one_error_per_run() -> None:
    lines = [*dataset(n=3), b"\n", b"  \n", *dataset(n=3), b"\r\n", *dataset(n=5)]

    report = validate_lines(lines)

    assert not report.ok
    assert [e.line for e in report.errors] == [4, 9]
    assert "2 blank lines from here" in report.errors[0].message
    assert report.rows == 11


@pytest.mark.parametrize("lines", [[], [b""], [b"\n", b"   \n"]], ids=["no lines", "empty", "blank"])
def test_an_empty_file_is_rejected(lines: list[bytes]) -> None:
    report = validate_lines(lines)

    assert not report.ok
    assert report.format is None
    assert report.errors == [LineError(0, "the file is empty: no JSON lines")]


def test_too_few_examples_is_a_file_level_error() -> None:
    report = validate_lines(dataset(n=9))

    assert report.errors == [LineError(0, "9 examples; at least 10 are needed")]
    assert validate_lines(dataset(n=2), min_examples=2).ok


def test_errors_are_capped_but_counted_and_file_errors_come_first() -> None:
    lines = [b"nope\n"] * 8

    report = validate_lines(lines, max_errors=5)

    assert report.error_count == 9
    assert [e.line for e in report.errors] == [0, 1, 2, 3, 4]
    assert report.stats.examples == 0


def test_only_the_first_problem_of_a_line_is_reported() -> None:
    record = {"messages": [{"role": "bot", "content": ""}, {"role": "bot", "content": ""}]}

    error = only_error(with_line(dataset(), 2, line(record)))

    assert error.line == 2
    assert "message 1 has unknown role 'bot'" in error.message


def test_validator_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DatasetValidator(min_examples=0)


# --- split_lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\nb\n"], [b"a", b"b"]),
        ([b"a\nb"], [b"a", b"b"]),
        ([b"a", b"b\n", b"\nc"], [b"ab", b"", b"c"]),
        ([b"", b"\n"], [b""]),
        ([], []),
        ([b"x\r\n"], [b"x\r"]),
    ],
)
def test_split_lines_cuts_chunks_into_lines(chunks: list[bytes], lines: list[bytes]) -> None:
    assert list(split_lines(chunks)) == lines


def test_split_lines_bounds_a_huge_line_and_the_validator_still_reports_it() -> None:
    chunks = [b'{"text": "ok"}\n', b"y" * 700, b"y" * 700, b"y" * 700 + b'\n{"text": "ok"}']

    lines = list(split_lines(chunks, max_line_bytes=1000))

    assert [len(raw) for raw in lines] == [14, 1001, 14]
    report = validate_lines(lines, max_line_bytes=1000, min_examples=1)
    assert [e.line for e in report.errors] == [2]
