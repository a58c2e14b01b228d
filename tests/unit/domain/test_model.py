"""Models: registered -> deleted, with the in-use rule."""

from __future__ import annotations

import pytest

from domain.errors import Conflict, ValidationFailed
from domain.model import Model
from tests.unit.domain.conftest import at, refused


def register(**overrides: object) -> Model:
    fields: dict[str, object] = {
        "model_id": "mdl_1",
        "user_id": "usr_1",
        "job_id": "job_1",
        "base_model": "tiny-llama",
        "kind": "lora",
        "weights_prefix": "users/usr_1/models/mdl_1/weights/",
        "sha256": "0" * 64,
        "size_bytes": 1234,
        "metrics": {"loss": 0.5},
    }
    fields.update(overrides)
    return Model.register(**fields, at=at())  # type: ignore[arg-type]


def test_register_then_delete() -> None:
    model = register()
    assert (model.status, model.kind, model.id) == ("ready", "lora", Model.create_id("mdl_1"))
    with refused(model, Conflict, "in use by active job[(]s[)] job_9"):
        model.delete(at(1), ["job_9"])
    model.delete(at(2))
    assert model.status == "deleted"
    with refused(model, Conflict, "already deleted"):
        model.delete(at(3))


def test_register_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValidationFailed) as info:
        register(kind="qlora")
    assert info.value.where == "kind"
