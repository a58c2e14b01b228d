"""Dataset format rules: validate a JSONL upload line by line and normalise it to chat form.

Four input formats, one per file (the first line that names one fixes it)::

    chat               {"messages": [{"role": "user", "content": "..."}, ...]}
    prompt_completion  {"prompt": "...", "completion": "..."}
    text               {"text": "..."}
    preference         {"input": {"messages": [...]},
                        "preferred_output": [{"role": "assistant", "content": "..."}],
                        "non_preferred_output": [{"role": "assistant", "content": "..."}]}

The first three are for supervised fine-tuning (``objective: sft``), ``preference`` (OpenAI's
DPO format) for preference tuning (``objective: dpo``): ``OBJECTIVE_FORMATS`` says which.

The rules follow OpenAI's and Together's validators: UTF-8, one JSON object per
line, a single detectable format, known roles (``system``, ``user``,
``assistant``; ``tool`` only when allowed), string non-empty content, at least
one assistant message, no two consecutive messages of one role, a ``system``
message only first, ``weight`` only 0 or 1 and only on assistant messages, at
least ``min_examples`` examples, no line over ``max_line_bytes``, no line nested deeper than
``MAX_JSON_DEPTH`` (64) levels of arrays and objects (``domain.json_depth``). Every error
names its line (``line=0`` for the file as a whole: empty, too few examples).
One error is reported per bad line (the first problem found on it).

Decisions (documented here, relied on by the API):

- Blank lines (only whitespace) are errors, as OpenAI and Together treat them,
  except a run of blank lines at the very end of the file, which editors leave.
  A run of blank lines in the middle is reported once, at its first line.
- A UTF-8 byte-order mark at the start of line 1 is ignored; ``\\r\\n`` endings are fine.
- Top-level keys other than the format's own (``id``, ``metadata``...) are
  allowed and dropped by ``normalise``; message keys are limited to
  ``role``, ``content``, ``name`` and ``weight``.
- Content that is only whitespace counts as empty.
- ``normalise`` turns every record into chat form ``{"messages": [...]}``:
  prompt/completion becomes a user message and an assistant message (contents
  unchanged); text becomes a single assistant message, so the trainer learns
  the whole text (loss on assistant tokens covers it all).
- A preference line is detected by ``preferred_output`` or ``non_preferred_output``. Its
  ``input`` is an object whose ``messages`` follow the chat rules except that they end on a
  ``user`` message (the turn both outputs answer) and need no assistant message; other keys of
  ``input`` (``tools``, ``parallel_tool_calls``) are allowed and dropped. Each output is a list
  of exactly one assistant message (OpenAI's single-turn rule), and the two must differ.
  ``weight`` has no meaning in a pair and is refused. ``normalise`` turns a pair into TRL's
  conversational preference form ``{"prompt": [...], "chosen": [...], "rejected": [...]}``;
  its statistics count every message of the line once.
- Tokens are estimated, not counted (no tokenizer here): ``ceil(content
  UTF-8 bytes / 4) + 4 per message`` for the role and template markers
  (OpenAI's cookbook counts 3 per message plus 3 per reply). See ``estimate_tokens``.

The module is pure: it consumes byte lines (``split_lines`` cuts a stream of
chunks into lines without ever holding more than ``max_line_bytes + 1`` of one)
and never reads a file itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import msgspec

from domain.errors import NotOffered, ValidationFailed
from domain.json_depth import MAX_JSON_DEPTH, json_too_deep

__all__ = [
    "BYTES_PER_TOKEN",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MIN_EXAMPLES",
    "FORMATS",
    "OBJECTIVE_FORMATS",
    "TOKENS_PER_MESSAGE",
    "DatasetFormat",
    "DatasetMismatch",
    "DatasetStats",
    "DatasetValidator",
    "LineError",
    "ValidationReport",
    "check_dataset_fits",
    "detect_format",
    "estimate_tokens",
    "normalise",
    "split_lines",
    "validate_lines",
]

DatasetFormat = Literal["chat", "prompt_completion", "text", "preference"]
FORMATS: tuple[DatasetFormat, ...] = ("chat", "prompt_completion", "text", "preference")
OBJECTIVE_FORMATS: dict[str, tuple[DatasetFormat, ...]] = {
    "sft": ("chat", "prompt_completion", "text"),
    "dpo": ("preference",),
}
"""The dataset formats each training objective (``TrainingConfig.objective``) trains on."""

DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB
DEFAULT_MIN_EXAMPLES = 10  # OpenAI's minimum
DEFAULT_MAX_ERRORS = 50
BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4

_ROLES = ("system", "user", "assistant")
_TOOL = "tool"
_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
_FORMAT_KEYS: dict[DatasetFormat, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "prompt_completion": frozenset({"prompt", "completion"}),
    "text": frozenset({"text"}),
    "preference": frozenset({"preferred_output", "non_preferred_output"}),
}
_PREFERENCE_OUTPUTS = ("preferred_output", "non_preferred_output")
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\f\v"
_decoder = msgspec.json.Decoder()


class LineError(msgspec.Struct, frozen=True):
    """One problem: ``line`` is 1-based, 0 for the file as a whole."""

    line: int
    message: str


class DatasetStats(msgspec.Struct):
    """Figures over the valid examples (all of them when the report is ok)."""

    examples: int = 0
    messages: int = 0
    content_bytes: int = 0
    est_tokens: int = 0
    min_messages: int = 0
    max_messages: int = 0
    mean_messages: float = 0.0
    role_counts: dict[str, int] = msgspec.field(default_factory=dict)
    max_line_bytes: int = 0


class ValidationReport(msgspec.Struct, frozen=True):
    """The verdict on a whole file. ``errors`` holds at most ``max_errors``; ``error_count`` all."""

    ok: bool
    format: DatasetFormat | None
    rows: int
    errors: list[LineError]
    error_count: int
    stats: DatasetStats


class DatasetMismatch(NotOffered):
    """A job's objective cannot train on its dataset's format (422): names both."""

    code = "dataset_mismatch"


def check_dataset_fits(objective: str, dataset_format: str | None, *, dataset_id: str) -> None:
    """Refuse (``DatasetMismatch``) a job whose ``objective`` does not train on ``dataset_format``."""
    fits = OBJECTIVE_FORMATS.get(objective, ())
    if dataset_format in fits:
        return
    other = [name for name, formats in OBJECTIVE_FORMATS.items() if dataset_format in formats]
    hint = f"; train it with objective {other[0]}" if other else ""
    needs = "a preference dataset" if fits == ("preference",) else f"a {' / '.join(fits)} dataset"
    raise DatasetMismatch(
        f"objective {objective} trains on {needs}, but dataset {dataset_id} is {dataset_format or 'unknown'}"
        f"{hint} (config key 'objective')",
        where="dataset_id",
    )


class _Invalid(Exception):
    """A record breaks a rule; the message says which."""


def estimate_tokens(stats: DatasetStats) -> int:
    """Estimated tokens in one epoch: ``ceil(content_bytes / 4) + 4 * messages``."""
    return -(-stats.content_bytes // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * stats.messages


def detect_format(record: Mapping[str, Any]) -> DatasetFormat:
    """The one format whose keys ``record`` has; ValidationFailed when none or several."""
    try:
        return _detect(record)
    except _Invalid as exc:
        raise ValidationFailed(str(exc), where="record") from exc


def normalise(record: Mapping[str, Any], *, allow_tool_role: bool = False) -> dict[str, Any]:
    """The record in chat form ``{"messages": [...]}`` (a preference pair: ``{"prompt", "chosen",
    "rejected"}``); ValidationFailed if it breaks a rule."""
    try:
        return _normalised(_detect(record), record, allow_tool_role)
    except _Invalid as exc:
        raise ValidationFailed(str(exc), where="record") from exc


def _detect(record: Mapping[str, Any]) -> DatasetFormat:
    found = [fmt for fmt, keys in _FORMAT_KEYS.items() if not keys.isdisjoint(record)]
    if not found:
        raise _Invalid(
            "no known format: expected 'messages', 'prompt' and 'completion', 'text', "
            "or 'input', 'preferred_output' and 'non_preferred_output'"
        )
    if len(found) > 1:
        raise _Invalid(f"keys of more than one format ({', '.join(found)}); use one")
    return found[0]


def _normalised(fmt: DatasetFormat, record: Mapping[str, Any], allow_tool_role: bool) -> dict[str, Any]:
    if fmt == "preference":
        return _preference(record, allow_tool_role)
    return {"messages": _messages(fmt, record, allow_tool_role)}


def _preference(record: Mapping[str, Any], allow_tool_role: bool) -> dict[str, Any]:
    """A checked preference pair in TRL's conversational form ``{"prompt", "chosen", "rejected"}``."""
    if "input" not in record:
        raise _Invalid("has no 'input'")
    given = record["input"]
    if not isinstance(given, dict):
        raise _Invalid(f"'input' must be an object with 'messages' (got {_json_type(given)})")
    if "messages" not in given:
        raise _Invalid("'input' has no 'messages'")
    roles = (*_ROLES, _TOOL) if allow_tool_role else _ROLES
    prompt = _conversation(given["messages"], roles, "input.messages", weights=False)
    if prompt[-1]["role"] == "assistant":
        raise _Invalid("input.messages ends with an assistant message; it must end with the turn to answer")
    outputs = [_output(record, key) for key in _PREFERENCE_OUTPUTS]
    if outputs[0]["content"] == outputs[1]["content"]:
        raise _Invalid("'preferred_output' and 'non_preferred_output' are the same; a pair must differ")
    return {"prompt": prompt, "chosen": [outputs[0]], "rejected": [outputs[1]]}


def _output(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    if key not in record:
        raise _Invalid(f"has no {key!r}")
    value = record[key]
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} messages" if isinstance(value, list) else _json_type(value)
        raise _Invalid(f"{key!r} must be a list of exactly one assistant message (got {got})")
    try:
        message = _message(1, value[0], _ROLES, weights=False)
    except _Invalid as exc:
        raise _Invalid(f"{key}: {exc}") from None
    if message["role"] != "assistant":
        raise _Invalid(f"{key}: message 1 is a {message['role']} message; it must be an assistant message")
    return message


def _messages(fmt: DatasetFormat, record: Mapping[str, Any], allow_tool_role: bool) -> list[dict[str, Any]]:
    """Checked messages of a record of format ``fmt``, copied into chat form."""
    if fmt == "prompt_completion":
        return [
            {"role": "user", "content": _text_field(record, "prompt")},
            {"role": "assistant", "content": _text_field(record, "completion")},
        ]
    if fmt == "text":
        return [{"role": "assistant", "content": _text_field(record, "text")}]
    roles = (*_ROLES, _TOOL) if allow_tool_role else _ROLES
    out = _conversation(record["messages"], roles, "messages")
    if not any(m["role"] == "assistant" for m in out):
        raise _Invalid("no assistant message")
    return out


def _conversation(
    raw: Any, roles: tuple[str, ...], key: str, *, weights: bool = True
) -> list[dict[str, Any]]:
    """Checked messages of the list ``raw`` (found at ``key``): known roles, alternating, system first."""
    if not isinstance(raw, list):
        raise _Invalid(f"{key!r} must be a list")
    if not raw:
        raise _Invalid(f"{key!r} is empty")
    out = [_message(i, m, roles, weights=weights) for i, m in enumerate(raw, 1)]
    for i, (prev, cur) in enumerate(itertools.pairwise(out), 2):
        if cur["role"] == "system":
            raise _Invalid(f"message {i} is a system message; a system message may only come first")
        if cur["role"] == prev["role"]:
            raise _Invalid(f"messages {i - 1} and {i} are both {cur['role']}; roles must alternate")
    return out


def _message(i: int, message: Any, roles: tuple[str, ...], *, weights: bool = True) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise _Invalid(f"message {i} is not a JSON object")
    if not weights and "weight" in message:
        raise _Invalid(f"message {i} has a 'weight'; a preference pair's messages take none")
    unknown = message.keys() - _MESSAGE_KEYS
    if unknown:
        raise _Invalid(f"message {i} has unknown key(s) {', '.join(sorted(map(repr, unknown)))}")
    if "role" not in message:
        raise _Invalid(f"message {i} has no 'role'")
    role = message["role"]
    if role not in roles:
        raise _Invalid(f"message {i} has unknown role {role!r:.40} (expected {', '.join(roles)})")
    out = {"role": role, "content": _text_field(message, "content", f"message {i} ")}
    if "name" in message:
        if not isinstance(message["name"], str) or not message["name"]:
            raise _Invalid(f"message {i} 'name' must be a non-empty string")
        out["name"] = message["name"]
    if "weight" in message:
        weight = message["weight"]
        if type(weight) is not int or weight not in (0, 1):
            raise _Invalid(f"message {i} 'weight' must be 0 or 1")
        if role != "assistant":
            raise _Invalid(f"message {i} has a 'weight' but only assistant messages may")
        out["weight"] = weight
    return out


def _text_field(obj: Mapping[str, Any], key: str, owner: str = "") -> str:
    if key not in obj:
        raise _Invalid(f"{owner}has no {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise _Invalid(f"{owner}{key!r} must be a string (got {_json_type(value)})")
    if not value.strip():
        raise _Invalid(f"{owner}{key!r} is empty")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class DatasetValidator:
    """Feed a file line by line, then ``finish()`` for the report.

    ``feed_line`` returns the line's record in chat form when the line is
    valid (``None`` otherwise), so one pass can validate and produce the
    processed file; the caller keeps that output only if ``finish().ok``.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        min_examples: int = DEFAULT_MIN_EXAMPLES,
        max_errors: int = DEFAULT_MAX_ERRORS,
        allow_tool_role: bool = False,
    ) -> None:
        if max_line_bytes < 1 or min_examples < 1 or max_errors < 1:
            raise ValueError("max_line_bytes, min_examples and max_errors must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.min_examples = min_examples
        self.max_errors = max_errors
        self.allow_tool_role = allow_tool_role
        self._line = 0
        self._rows = 0
        self._format: DatasetFormat | None = None
        self._format_line = 0
        self._blank_start = 0  # first line of the current run of blank lines, 0 if none
        self._blank_run = 0
        self._errors: list[LineError] = []
        self._error_count = 0
        self._stats = DatasetStats()

    def feed_line(self, raw: bytes) -> dict[str, Any] | None:
        """Check the next line (its ``\\n`` or ``\\r\\n`` may be included)."""
        self._line += 1
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        if self._line == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        stats = self._stats
        stats.max_line_bytes = max(stats.max_line_bytes, len(line))
        if len(line) <= self.max_line_bytes and not line.strip(_WHITESPACE):
            if not self._blank_run:
                self._blank_start = self._line
            self._blank_run += 1
            return None
        self._end_blank_run()
        self._rows += 1
        try:
            record = self._check(line)
        except _Invalid as exc:
            self._error(self._line, str(exc))
            return None
        messages = record.get("messages") or [*record["prompt"], *record["chosen"], *record["rejected"]]
        stats.examples += 1
        stats.messages += len(messages)
        stats.min_messages = len(messages) if stats.examples == 1 else min(stats.min_messages, len(messages))
        stats.max_messages = max(stats.max_messages, len(messages))
        for m in messages:
            stats.content_bytes += len(m["content"].encode("utf-8", "surrogatepass"))
            stats.role_counts[m["role"]] = stats.role_counts.get(m["role"], 0) + 1
        return record

    def _check(self, line: bytes) -> dict[str, Any]:
        if len(line) > self.max_line_bytes:
            raise _Invalid(f"line is longer than the limit of {self.max_line_bytes:,} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
        if json_too_deep(line):
            raise _Invalid(f"JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects")
        try:
            record = _decoder.decode(text)
        except msgspec.DecodeError as exc:
            raise _Invalid(f"not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise _Invalid(f"expected a JSON object, got {_json_type(record)}")
        fmt = _detect(record)
        if self._format is None:
            self._format, self._format_line = fmt, self._line
        elif fmt != self._format:
            raise _Invalid(
                f"format {fmt} differs from the file's format {self._format} (line {self._format_line}); "
                "mixed formats are not allowed"
            )
        return _normalised(fmt, record, self.allow_tool_role)

    def _end_blank_run(self) -> None:
        if self._blank_run:
            more = f" ({self._blank_run} blank lines from here)" if self._blank_run > 1 else ""
            self._error(self._blank_start, f"blank line{more}; blank lines are only allowed at the end")
            self._blank_run = 0

    def _error(self, line: int, message: str) -> None:
        self._error_count += 1
        if len(self._errors) < self.max_errors:
            self._errors.append(LineError(line, message))

    def finish(self) -> ValidationReport:
        """The report; trailing blank lines are forgiven, file-level errors come first."""
        file_errors: list[LineError] = []
        if self._rows == 0:
            file_errors.append(LineError(0, "the file is empty: no JSON lines"))
        elif self._rows < self.min_examples:
            file_errors.append(
                LineError(0, f"{self._rows} examples; at least {self.min_examples} are needed")
            )
        seen = self._stats
        stats = msgspec.structs.replace(
            seen,
            role_counts=dict(sorted(seen.role_counts.items())),
            mean_messages=round(seen.messages / seen.examples, 3) if seen.examples else 0.0,
        )
        stats.est_tokens = estimate_tokens(stats)
        count = self._error_count + len(file_errors)
        return ValidationReport(
            ok=count == 0,
            format=self._format,
            rows=self._rows,
            errors=(file_errors + self._errors)[: self.max_errors],
            error_count=count,
            stats=stats,
        )


def validate_lines(lines: Iterable[bytes], **limits: Any) -> ValidationReport:
    """Validate every line of ``lines``; ``limits`` are DatasetValidator's keyword arguments."""
    validator = DatasetValidator(**limits)
    for line in lines:
        validator.feed_line(line)
    return validator.finish()


def split_lines(chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[bytes]:
    """Cut a stream of byte chunks into lines (without ``\\n``).

    A line longer than ``max_line_bytes`` is cut to ``max_line_bytes + 1``
    bytes, enough for the validator to report it, so memory stays bounded.
    A final ``\\n`` does not make an extra empty line.
    """
    keep = max_line_bytes + 1
    buf = bytearray()
    pending = False  # a line has started (even if empty so far)
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            room = keep - len(buf)
            if room > 0:
                buf += chunk[start : min(stop, start + room)]
            if end < 0:
                pending = pending or start < len(chunk)
                break
            yield bytes(buf)
            buf.clear()
            pending = False
            start = end + 1
    if pending:
        yield bytes(buf)
