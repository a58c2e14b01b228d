"""The base-model catalogue."""

from __future__ import annotations

import pytest

from domain.catalogue import BaseModelCatalogue
from domain.errors import Conflict, NotFound, ValidationFailed
from tests.unit.domain.conftest import at, refused


def test_add_remove_and_refusals() -> None:
    cat = BaseModelCatalogue.create(at())
    cat.add("tiny-llama", "builtin", "tiny-llama", at(1))
    assert cat.models["tiny-llama"]["source_kind"] == "builtin"
    with refused(cat, Conflict, "already in the catalogue"):
        cat.add("tiny-llama", "hub", "x/y", at(2))
    with refused(cat, ValidationFailed, "source_kind"):
        cat.add("other", "s3", "x", at(2))
    with refused(cat, NotFound, "available: tiny-llama"):
        cat.remove("llama3-8b", at(2))
    cat.remove("tiny-llama", at(3))
    assert cat.models == {}
    with pytest.raises(NotFound):
        cat.check_has("tiny-llama")
