"""The model fold: models/<id>/metadata.json and models.json."""

from __future__ import annotations

from functools import reduce

from domain.model import Model
from projections import models
from projections.render import decode, encode
from tests.unit.projections.builders import Clock, events_of, new_model


def _register(clock: Clock, model_id: str) -> Model:
    return new_model(model_id, clock(), size_bytes=4096, metrics={"eval_loss": 0.9})


def test_registered_model_metadata() -> None:
    clock = Clock()
    state = reduce(models.fold, events_of(_register(clock, "m1")), None)  # type: ignore[arg-type]
    meta = decode(encode(models.item_view(state, 4)))
    assert meta["position"] == 4 and meta["status"] == "ready" and meta["kind"] == "lora"
    assert meta["weights_prefix"] == "users/u1/models/m1/weights/" and meta["job_id"] == "j1"
    assert meta["metrics"] == {"eval_loss": 0.9} and meta["deleted_at"] is None


def test_deleted_model_leaves_the_listing_and_keeps_a_tombstone() -> None:
    clock = Clock()
    a, b = _register(clock, "ma"), _register(clock, "mb")
    a.delete(at=clock())
    states = [reduce(models.fold, events_of(m), None) for m in (a, b)]  # type: ignore[arg-type]
    assert [r.model_id for r in models.listing_view(states, 3).models] == ["mb"]
    assert states[0].status == "deleted" and states[0].deleted_at is not None
