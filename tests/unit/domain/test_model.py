"""Models: registered -> deleted, with the in-use rule."""

from __future__ import annotations

import pytest

from domain.errors import Conflict, ValidationFailed
from domain.model import Model
from tests.unit.domain.conftest import at, refused, register_model


def test_register_then_delete() -> None:
    model = register_model()
    assert (model.status, model.kind, model.id) == ("ready", "lora", Model.create_id("mdl_1"))
    with refused(model, Conflict, "in use by active job[(]s[)] job_9"):
        model.delete(at(1), ["job_9"])
    model.delete(at(2))
    assert model.status == "deleted"
    with refused(model, Conflict, "already deleted"):
        model.delete(at(3))


def test_register_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValidationFailed) as info:
        register_model(kind="qlora")
    assert info.value.where == "kind"
