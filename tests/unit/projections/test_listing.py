"""What the per-entity projections share: a log must start at the entity's first event."""

from __future__ import annotations

import pytest

from domain.dataset import Dataset
from projections import datasets, jobs, models, users
from tests.unit.projections.builders import SHA, Clock, events_of


def test_a_history_that_starts_mid_way_is_refused_naming_the_missing_event() -> None:
    clock = Clock()
    ds = Dataset.upload(
        dataset_id="ds1", user_id="u1", filename="a.jsonl", size_bytes=1, sha256=SHA, at=clock()
    )
    ds.delete(at=clock())
    _uploaded, deleted = events_of(ds)
    for family, first in (
        (datasets, "Dataset.Uploaded"),
        (jobs, "Job.Submitted"),
        (models, "Model.Registered"),
        (users, "User.Registered"),
    ):
        with pytest.raises(ValueError, match=f"Dataset.Deleted before {first} for aggregate {ds.id}"):
            family.fold(None, deleted)  # type: ignore[attr-defined]
