"""Datasets: uploaded -> validated | rejected -> deleted, and the in-use rule."""

from __future__ import annotations

import pytest

from domain.dataset import Dataset, check_filename
from domain.errors import Conflict, ValidationFailed
from tests.unit.domain.conftest import at, refused, refused_field

SHA = "ab" * 32


def upload(**overrides: object) -> Dataset:
    fields: dict[str, object] = {
        "dataset_id": "ds_1",
        "user_id": "usr_1",
        "filename": "train.jsonl",
        "size_bytes": 10,
        "sha256": SHA,
    }
    fields.update(overrides)
    return Dataset.upload(**fields, at=at())  # type: ignore[arg-type]


def test_validated_dataset_is_usable() -> None:
    ds = upload()
    with refused(ds, Conflict, "only a validated dataset"):
        ds.check_usable()
    ds.validate("chat", 120, {"tokens": 5000}, at(1))
    ds.check_usable()
    assert (ds.status, ds.format, ds.rows, ds.stats) == ("validated", "chat", 120, {"tokens": 5000})


def test_rejected_dataset_keeps_its_line_errors_and_cannot_be_validated() -> None:
    ds = upload()
    ds.reject([{"line": 3, "message": "not JSON"}, {"line": None, "message": "no rows"}], at(1))
    assert ds.errors == [{"line": 3, "message": "not JSON"}, {"line": None, "message": "no rows"}]
    with refused(ds, Conflict, "dataset ds_1 is rejected; cannot validate it"):
        ds.validate("chat", 1, {}, at(2))
    with refused(ds, Conflict, "only a validated"):
        ds.check_usable()


def test_delete_refuses_while_active_jobs_use_it_naming_them() -> None:
    ds = upload()
    ds.validate("chat", 1, {}, at(1))
    with refused(ds, Conflict, "in use by active job[(]s[)] job_a, job_b"):
        ds.delete(at(2), ["job_b", "job_a"])
    ds.delete(at(3), [])
    assert ds.status == "deleted"
    with refused(ds, Conflict, "already deleted"):
        ds.delete(at(4))


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"filename": "../x"}, "filename"),
        ({"filename": ".."}, "filename"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"dataset_id": ""}, "dataset_id"),
    ],
)
def test_upload_refuses_bad_fields(override: dict[str, object], where: str) -> None:
    assert refused_field(upload, override) == where


@pytest.mark.parametrize(
    "name",
    [
        "evil\u202elmth.jsonl",  # RIGHT-TO-LEFT OVERRIDE: shows as 'evilnoj.shtml'
        *(f"a{chr(c)}b.jsonl" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F]),
        "arabic\u061cmark.jsonl",
        "zero\u200bwidth.jsonl",
        "\ufeffbom.jsonl",
        "line\u2028break.jsonl",
        "c1\x85control.jsonl",
        "del\x7f.jsonl",
        "bell\x07.jsonl",
        "lone\ud800surrogate.jsonl",
    ],
)
def test_a_filename_with_invisible_characters_is_refused_naming_the_character(name: str) -> None:
    with pytest.raises(ValidationFailed, match=r"contains U\+[0-9A-F]{4}.*invisible") as caught:
        check_filename(name)
    assert caught.value.where == "filename"


@pytest.mark.parametrize("name", ["résumé données.jsonl", "数据 (2).jsonl", "שלום.jsonl", "emoji 🙂.jsonl"])
def test_ordinary_unicode_filenames_are_fine(name: str) -> None:
    check_filename(name)


def test_reject_needs_errors() -> None:
    ds = upload()
    with refused(ds, ValidationFailed, "at least one error"):
        ds.reject([], at(1))
    with refused(ds, ValidationFailed):
        ds.reject([{"line": -1, "message": "x"}], at(1))
