"""The dataset fold: data/<id>/metadata.json and datasets.json."""

from __future__ import annotations

from functools import reduce

from domain.dataset import Dataset
from projections import datasets
from projections.render import decode, encode
from tests.unit.projections.builders import SHA, Clock, events_of


def _upload(clock: Clock, dataset_id: str = "ds1") -> Dataset:
    return Dataset.upload(
        dataset_id=dataset_id, user_id="u1", filename="chat.jsonl", size_bytes=2048, sha256=SHA, at=clock()
    )


def test_validated_dataset_metadata_and_listing() -> None:
    clock = Clock()
    ds = _upload(clock)
    ds.validate("chat", 120, {"tokens": 9000}, at=clock())
    state = reduce(datasets.fold, events_of(ds), None)  # type: ignore[arg-type]
    meta = decode(encode(datasets.item_view(state, 2)))
    assert meta == {
        "position": 2,
        "dataset_id": "ds1",
        "filename": "chat.jsonl",
        "status": "validated",
        "size_bytes": 2048,
        "sha256": SHA,
        "format": "chat",
        "rows": 120,
        "stats": {"tokens": 9000},
        "errors": [],
        "created_at": "2024-03-01T09:01:00Z",
        "updated_at": "2024-03-01T09:02:00Z",
        "deleted_at": None,
    }
    listing = decode(encode(datasets.listing_view([state], 2)))
    assert listing["datasets"][0]["dataset_id"] == "ds1" and listing["datasets"][0]["rows"] == 120


def test_rejected_dataset_lists_its_line_errors() -> None:
    clock = Clock()
    ds = _upload(clock)
    ds.reject(
        [{"line": 3, "message": "missing 'messages'"}, {"line": None, "message": "empty file"}], at=clock()
    )
    state = reduce(datasets.fold, events_of(ds), None)  # type: ignore[arg-type]
    assert state.status == "rejected"
    assert decode(encode(datasets.item_view(state, 1)))["errors"] == [
        {"line": 3, "message": "missing 'messages'"},
        {"line": None, "message": "empty file"},
    ]


def test_deleted_dataset_keeps_a_tombstone_and_leaves_the_listing() -> None:
    clock = Clock()
    kept, gone = _upload(clock, "keep"), _upload(clock, "gone")
    gone.delete(at=clock())
    states = [reduce(datasets.fold, events_of(d), None) for d in (kept, gone)]  # type: ignore[arg-type]
    assert datasets.row(states[1]) is None
    assert [r.dataset_id for r in datasets.listing_view(states, 3).datasets] == ["keep"]
    tomb = decode(encode(datasets.item_view(states[1], 3)))
    assert tomb["status"] == "deleted" and tomb["deleted_at"] == "2024-03-01T09:03:00Z"
