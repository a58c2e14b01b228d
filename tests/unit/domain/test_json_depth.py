"""The nesting limit checked before untrusted JSON is decoded (msgspec recurses per level)."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.json_depth import MAX_JSON_DEPTH, json_too_deep


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def test_a_thousand_levels_is_too_deep_for_msgspec_and_for_the_check() -> None:
    with pytest.raises(RecursionError):
        msgspec.json.decode(nested(1000))
    assert json_too_deep(nested(1000))


@pytest.mark.parametrize("depth", [0, 1, MAX_JSON_DEPTH])
def test_up_to_the_limit_is_fine(depth: int) -> None:
    assert not json_too_deep(nested(depth))
    assert not json_too_deep(b'{"a":' * depth + b"1" + b"}" * depth)


def test_one_more_is_too_deep_arrays_and_objects_alike() -> None:
    assert json_too_deep(nested(MAX_JSON_DEPTH + 1))
    assert json_too_deep(b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1))


def test_brackets_inside_strings_and_escaped_quotes_do_not_count() -> None:
    assert not json_too_deep(b'["' + b"[" * 1000 + b'"]')
    assert not json_too_deep(b'["\\"' + b"{" * 1000 + b'\\\\"]')


def test_many_shallow_siblings_are_not_deep() -> None:
    assert not json_too_deep(b"[" + b"[[]]," * 10_000 + b"[]]")


@given(st.recursive(st.none() | st.text(max_size=5), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_agrees_with_the_actual_depth(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    data = json.dumps(value).encode()
    for limit in (1, 2, 3, 5):
        assert json_too_deep(data, limit) == (depth(value) > limit)
