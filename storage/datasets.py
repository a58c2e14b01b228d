"""Turn an uploaded raw dataset object into the processed ``train.jsonl`` (chat form; a preference
dataset: TRL's ``{"prompt", "chosen", "rejected"}`` pairs, see ``domain.dataset_format``).

Two streaming passes over the raw object, so memory stays bounded by the
line limit: the first validates the whole file; only if it is valid does the
second write the processed object (one normalised record per line).
A rejected file leaves nothing processed behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from domain.dataset_format import DEFAULT_MAX_LINE_BYTES, DatasetValidator, ValidationReport, split_lines
from storage.bucket import Bucket

__all__ = ["process_dataset"]

_READ_CHUNK = 1 << 20
_WRITE_CHUNK = 1 << 20


def process_dataset(bucket: Bucket, raw_name: str, processed_name: str, **limits: Any) -> ValidationReport:
    """Validate object ``raw_name``; if valid, write ``processed_name``; return the report.

    ``limits`` are ``DatasetValidator``'s keyword arguments (``max_line_bytes``,
    ``min_examples``, ``max_errors``, ``allow_tool_role``).
    """
    validator = DatasetValidator(**limits)
    for line in _lines(bucket, raw_name, validator.max_line_bytes):
        validator.feed_line(line)
    report = validator.finish()
    if report.ok:
        bucket.upload(processed_name, _processed_chunks(bucket, raw_name, limits))
    return report


def _lines(bucket: Bucket, name: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[bytes]:
    with bucket.open_read(name) as f:
        yield from split_lines(iter(lambda: f.read(_READ_CHUNK), b""), max_line_bytes=max_line_bytes)


def _processed_chunks(bucket: Bucket, raw_name: str, limits: dict[str, Any]) -> Iterator[bytes]:
    """The processed lines, about a megabyte at a time; re-checked as they go."""
    validator = DatasetValidator(**limits)
    encoder = msgspec.json.Encoder()
    buf = bytearray()
    for line in _lines(bucket, raw_name, validator.max_line_bytes):
        record = validator.feed_line(line)
        if record is not None:
            encoder.encode_into(record, buf, -1)
            buf += b"\n"
        if len(buf) >= _WRITE_CHUNK:
            yield bytes(buf)
            buf.clear()
    if not validator.finish().ok:  # the raw object changed between the passes
        raise RuntimeError(f"{raw_name} changed while it was being processed")
    if buf:
        yield bytes(buf)
