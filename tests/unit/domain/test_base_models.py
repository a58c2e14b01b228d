"""Whether a base model can be had where jobs run: decided from the bucket and the hub's switch (pure)."""

from __future__ import annotations

import pytest

from domain.base_models import (
    CATALOGUE,
    BaseModelUnavailable,
    check_obtainable,
    hub_offline,
)
from domain.errors import ValidationFailed

HUB = CATALOGUE["qwen2_5-0_5b"]
BUILTIN = CATALOGUE["tiny-llama"]


@pytest.mark.parametrize(
    ("env", "off"),
    [
        ({}, False),
        ({"HF_HUB_OFFLINE": "1"}, True),
        ({"HF_HUB_OFFLINE": " Yes "}, True),
        ({"HF_HUB_OFFLINE": "0"}, False),
        ({"TRANSFORMERS_OFFLINE": "on"}, True),
    ],
)
def test_the_hub_is_off_where_either_variable_says_so(env: dict[str, str], off: bool) -> None:
    assert hub_offline(env) is off


def test_a_hub_model_not_converted_with_the_hub_off_is_refused_naming_the_variable() -> None:
    with pytest.raises(BaseModelUnavailable) as refused:
        check_obtainable(HUB, converted=False, hub_offline=True)
    error = refused.value
    assert isinstance(error, ValidationFailed)  # reported with the request's other problems
    assert (error.code, error.where) == ("base_model_unavailable", "base_model")
    assert "HF_HUB_OFFLINE" in error.message and HUB.source in error.message


def test_a_hub_model_not_converted_with_the_hub_on_is_a_warning_about_the_download() -> None:
    [warning] = check_obtainable(HUB, converted=False, hub_offline=False)
    assert HUB.source in warning and "downloads" in warning


@pytest.mark.parametrize("offline", [True, False])
def test_a_converted_model_or_a_built_in_one_needs_nothing(offline: bool) -> None:
    assert check_obtainable(HUB, converted=True, hub_offline=offline) == []
    assert check_obtainable(BUILTIN, converted=False, hub_offline=offline) == []
