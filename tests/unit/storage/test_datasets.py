"""process_dataset: a valid raw upload becomes processed chat JSONL; a bad one leaves nothing."""

from __future__ import annotations

import json

import pytest

from domain.dataset_format import normalise
from storage import LocalBucket
from storage import datasets as dataset_processing
from storage.datasets import process_dataset

RAW = "users/u1/data/ds1/raw/train.jsonl"
PROCESSED = "users/u1/data/ds1/processed/train.jsonl"
RECORDS = [{"prompt": f"question {i}?", "completion": f" answer {i}", "id": i} for i in range(25)]


def jsonl(records: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_a_valid_upload_is_written_in_chat_form_line_for_line(
    local_bucket: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_processing, "_READ_CHUNK", 7)  # lines straddle chunks
    monkeypatch.setattr(dataset_processing, "_WRITE_CHUNK", 100)
    local_bucket.write(RAW, jsonl(RECORDS))

    report = process_dataset(local_bucket, RAW, PROCESSED)

    assert report.ok and report.format == "prompt_completion" and report.rows == 25
    lines = local_bucket.read(PROCESSED).decode().splitlines()
    assert [json.loads(x) for x in lines] == [normalise(r) for r in RECORDS]


def test_a_rejected_upload_leaves_nothing_processed(local_bucket: LocalBucket) -> None:
    local_bucket.write(RAW, jsonl(RECORDS[:12]) + b'{"prompt": "trunc\n' + jsonl(RECORDS[12:]))

    report = process_dataset(local_bucket, RAW, PROCESSED)

    assert not report.ok
    assert [(e.line, e.message[:14]) for e in report.errors] == [(13, "not valid JSON")]
    assert not local_bucket.exists(PROCESSED)


def test_limits_reach_the_validator(local_bucket: LocalBucket) -> None:
    local_bucket.write(RAW, jsonl(RECORDS[:3]))

    assert not process_dataset(local_bucket, RAW, PROCESSED).ok
    assert process_dataset(local_bucket, RAW, PROCESSED, min_examples=3).ok
    assert local_bucket.exists(PROCESSED)
