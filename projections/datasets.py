"""Datasets: ``data/<dataset_id>/metadata.json`` per dataset and the ``metadata/datasets.json`` listing.

A deleted dataset keeps its metadata.json as a tombstone (``status: deleted``)
and leaves the listing; whoever removes its files must leave metadata.json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from domain.dataset import Dataset
from projections.listing import copied, opened, ordered_rows, started_by
from projections.render import event_name, event_names
from views.rows import DatasetRow, LineError

__all__ = [
    "EVENTS",
    "DatasetRow",
    "DatasetState",
    "DatasetView",
    "DatasetsView",
    "fold",
    "item_view",
    "listed",
    "listing_view",
    "row",
]

EVENTS = event_names(Dataset.Uploaded, Dataset.Validated, Dataset.Rejected, Dataset.Deleted)


class DatasetState(started_by(Dataset.Uploaded), frozen=True):  # type: ignore[misc]
    """What ``Dataset.Uploaded`` records, then what the views add."""

    created_at: datetime
    updated_at: datetime
    status: str = "uploaded"
    format: str | None = None
    rows: int | None = None
    stats: dict[str, Any] | None = None
    errors: tuple[LineError, ...] = ()
    deleted_at: datetime | None = None


def _line_error(error: Any) -> LineError:
    if isinstance(error, dict):
        return LineError(line=error.get("line"), message=str(error.get("message", "")))
    return LineError(line=getattr(error, "line", None), message=str(getattr(error, "message", error)))


def fold(dataset: DatasetState | None, event: Any) -> DatasetState:
    """The dataset after one of its events (pure)."""
    if dataset is None:
        return opened(DatasetState, event, "Dataset.Uploaded")
    name = event_name(event)
    at: datetime = event.at
    if name == "Dataset.Validated":
        validated = {"format": event.format, "rows": event.rows, "stats": event.stats}
        return replace(dataset, status="validated", updated_at=at, **validated)
    if name == "Dataset.Rejected":
        errors = tuple(_line_error(error) for error in event.errors)
        return replace(dataset, status="rejected", errors=errors, updated_at=at)
    if name == "Dataset.Deleted":
        return replace(dataset, status="deleted", deleted_at=at, updated_at=at)
    return replace(dataset, updated_at=at)


class DatasetView(msgspec.Struct):
    """``data/<dataset_id>/metadata.json``."""

    position: int
    dataset_id: str
    filename: str
    status: str
    size_bytes: int
    sha256: str
    format: str | None
    rows: int | None
    stats: dict[str, Any] | None
    errors: tuple[LineError, ...]
    created_at: str | None
    updated_at: str | None
    deleted_at: str | None


def item_view(dataset: DatasetState, position: int) -> DatasetView:
    return copied(DatasetView, dataset, position=position)


class DatasetsView(msgspec.Struct):
    """``metadata/datasets.json``: datasets not deleted, oldest first."""

    position: int
    datasets: list[DatasetRow]


def row(dataset: DatasetState) -> DatasetRow | None:
    """The listing row, or None once deleted."""
    return None if dataset.status == "deleted" else copied(DatasetRow, dataset)


def listed(dataset: DatasetState) -> tuple[Any, ...] | None:
    """What the listing row is made of, uncooked (None once deleted)."""
    if dataset.status == "deleted":
        return None
    return (dataset.status, dataset.format, dataset.rows, dataset.updated_at)


def listing_view(datasets: list[DatasetState], position: int) -> DatasetsView:
    return DatasetsView(position, ordered_rows(datasets, "dataset_id", row))
