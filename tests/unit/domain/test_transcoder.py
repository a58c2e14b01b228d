"""The msgspec-parsed JSON transcoder reads exactly what the library's JSONTranscoder reads."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from domain.applications import UserApp
from domain.transcoder import MsgspecJSONTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


STDLIB, FAST = _registered(JSONTranscoder()), _registered(MsgspecJSONTranscoder())

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_it_decodes_what_the_library_encodes_as_the_library_does(state: dict[str, Any]) -> None:
    data = STDLIB.encode(state)
    assert FAST.decode(data) == STDLIB.decode(data)
    assert FAST.encode(state) == data  # the stored format is unchanged


def test_nested_custom_types_come_back_as_their_types() -> None:
    at, key, price = datetime(2026, 3, 1, tzinfo=UTC), uuid4(), Decimal("2.90")
    state = {"at": at, "rows": [{"id": key, "price": price}], "deep": {"x": [at]}}
    decoded = FAST.decode(STDLIB.encode(state))
    assert decoded == state
    assert isinstance(decoded["rows"][0]["id"], UUID) and isinstance(decoded["deep"]["x"][0], datetime)


def test_nan_written_by_the_stdlib_encoder_still_decodes() -> None:
    decoded = FAST.decode(STDLIB.encode({"loss": float("nan"), "at": datetime(2026, 1, 1, tzinfo=UTC)}))
    assert math.isnan(decoded["loss"]) and decoded["at"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_an_unknown_type_is_refused_as_the_library_refuses_it() -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(b'{"x":{"_type_":"no_such_type","_data_":1}}')


def test_the_applications_use_it() -> None:
    assert type(UserApp("u1").mapper.transcoder) is MsgspecJSONTranscoder
