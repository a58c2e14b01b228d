"""Properties of the dataset rules: valid files pass and normalise to valid chat files;
any single corruption of a valid file is reported at exactly the corrupted line."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.dataset_format import DatasetValidator, normalise, validate_lines

MIN_EXAMPLES = 3
MAX_LINE_BYTES = 4096

content = st.text(min_size=1, max_size=40).filter(str.strip)
extra_keys = st.dictionaries(
    st.sampled_from(["id", "source", "meta"]), st.integers() | st.text(max_size=5), max_size=2
)


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    """Alternating turns with at least one assistant message, maybe a system message first."""
    turns = draw(st.integers(1, 6))
    first = draw(st.sampled_from(["user", "assistant"])) if turns > 1 else "assistant"
    other = {"user": "assistant", "assistant": "user"}
    roles = [first]
    while len(roles) < turns:
        roles.append(other[roles[-1]])
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()) and first == "user":
        messages.append({"role": "system", "content": draw(content)})
    for role in roles:
        message: dict[str, Any] = {"role": role, "content": draw(content)}
        if role == "assistant" and draw(st.booleans()):
            message["weight"] = draw(st.sampled_from([0, 1]))
        if draw(st.integers(0, 4)) == 0:
            message["name"] = draw(st.text(min_size=1, max_size=8))
        messages.append(message)
    return {"messages": messages, **draw(extra_keys)}


def prompt_completions() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda p, c, e: {"prompt": p, "completion": c, **e}, content, content, extra_keys)


def texts() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda t, e: {"text": t, **e}, content, extra_keys)


FORMATS = {"chat": conversations(), "prompt_completion": prompt_completions(), "text": texts()}


@st.composite
def valid_files(draw: st.DrawFn, min_rows: int = MIN_EXAMPLES) -> tuple[str, list[dict[str, Any]]]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    records = draw(st.lists(FORMATS[fmt], min_size=min_rows, max_size=min_rows + 8))
    return fmt, records


def encode(
    records: list[dict[str, Any]], *, crlf: bool = False, bom: bool = False, trailing_blanks: int = 0
) -> list[bytes]:
    end = b"\r\n" if crlf else b"\n"
    lines = [msgspec.json.encode(r) + end for r in records] + [end] * trailing_blanks
    if bom and lines:
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    return lines


@settings(max_examples=150, deadline=None)
@given(valid_files(), st.booleans(), st.booleans(), st.integers(0, 3))
def test_a_valid_file_passes_and_normalises_to_a_chat_file_that_revalidates(
    file: tuple[str, list[dict[str, Any]]], crlf: bool, bom: bool, trailing_blanks: int
) -> None:
    fmt, records = file
    validator = DatasetValidator(min_examples=MIN_EXAMPLES, max_line_bytes=MAX_LINE_BYTES)

    processed = [
        validator.feed_line(raw)
        for raw in encode(records, crlf=crlf, bom=bom, trailing_blanks=trailing_blanks)
    ]
    report = validator.finish()

    assert report.ok, report.errors
    assert (report.format, report.rows, report.stats.examples) == (fmt, len(records), len(records))
    assert processed == [normalise(r) for r in records] + [None] * trailing_blanks
    again = validate_lines(encode([p for p in processed if p is not None]), min_examples=MIN_EXAMPLES)
    assert again.ok and again.format == "chat"
    same = ("examples", "messages", "content_bytes", "est_tokens", "role_counts", "min_messages")
    assert all(getattr(again.stats, k) == getattr(report.stats, k) for k in same)


CORRUPTIONS = [
    "truncate",
    "bad_utf8",
    "huge",
    "not_object",
    "blank",
    "other_format",
    "bad_field",
    "no_format",
]


def corrupt_record(draw: st.DrawFn, fmt: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` made to break one rule of its own format."""
    if fmt == "text":
        return {**record, "text": draw(st.sampled_from(["", "  ", None, 1, ["x"]]))}
    if fmt == "prompt_completion":
        key = draw(st.sampled_from(["prompt", "completion"]))
        return {**record, key: draw(st.sampled_from(["", "\n", None, {"a": 1}]))}
    messages = [dict(m) for m in record["messages"]]
    i = draw(st.integers(0, len(messages) - 1))
    how = draw(st.sampled_from(["role", "content", "repeat", "drop_assistants", "late_system"]))
    if how == "role":
        roles = ("system", "user", "assistant")
        messages[i]["role"] = draw(st.text(max_size=8).filter(lambda r: r not in roles))
    elif how == "content":
        messages[i]["content"] = draw(st.sampled_from(["", " ", None, 3, []]))
    elif how == "repeat":
        messages.insert(i, dict(messages[i]))
    elif how == "drop_assistants":
        messages = [m for m in messages if m["role"] != "assistant"] or []
    else:
        messages.append({"role": "system", "content": "late"})
    return {**record, "messages": messages}


@settings(max_examples=300, deadline=None)
@given(valid_files(min_rows=MIN_EXAMPLES + 1), st.data())
def test_any_single_corruption_is_reported_at_its_line_only(
    file: tuple[str, list[dict[str, Any]]], data: st.DataObject
) -> None:
    fmt, records = file
    lines = encode(records)
    kind = data.draw(st.sampled_from(CORRUPTIONS), label="kind")
    # a blank last line is forgiven and a first line fixes the format: keep those corruptions inside
    low = 2 if kind == "other_format" else 1
    high = len(lines) - 1 if kind == "blank" else len(lines)
    at = data.draw(st.integers(low, high), label="line")
    raw = lines[at - 1].rstrip(b"\n")
    if kind == "truncate":
        bad = raw[: data.draw(st.integers(1, len(raw) - 1))]
    elif kind == "bad_utf8":
        cut = data.draw(st.integers(0, len(raw)))
        bad = raw[:cut] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[cut:]
    elif kind == "huge":
        bad = msgspec.json.encode({**records[at - 1], "pad": "x" * MAX_LINE_BYTES})
    elif kind == "not_object":
        bad = msgspec.json.encode(data.draw(st.sampled_from([[records[at - 1]], "text", 1, None])))
    elif kind == "blank":
        bad = data.draw(st.sampled_from([b"", b" ", b"\t\r"]))
    elif kind == "other_format":
        other = data.draw(st.sampled_from(sorted(set(FORMATS) - {fmt})))
        bad = msgspec.json.encode(data.draw(FORMATS[other]))
    elif kind == "no_format":
        bad = msgspec.json.encode(data.draw(extra_keys))
    else:
        bad = msgspec.json.encode(corrupt_record(data.draw, fmt, records[at - 1]))

    report = validate_lines(
        [*lines[: at - 1], bad + b"\n", *lines[at:]], min_examples=MIN_EXAMPLES, max_line_bytes=MAX_LINE_BYTES
    )

    assert not report.ok
    assert [e.line for e in report.errors] == [at], report.errors
    assert report.error_count == 1
