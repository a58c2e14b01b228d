from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec

from domain.money import dollars
from projections.render import encode, iso, seconds


def test_dollars_are_exact_decimal_json_numbers_with_two_decimals_at_least() -> None:
    assert encode([dollars(m) for m in (10_000_000, 156_780_000, 123, 1, 0, 1_000_000_000_000)]) == (
        b"[10.00,156.78,0.000123,0.000001,0.00,1000000.00]"
    )


def test_dollars_round_trip_to_micros_for_any_amount() -> None:
    for micros in (0, 1, 7, 99, 100, 2_100_001, 10**15 + 3):
        assert dollars(micros) * 1_000_000 == micros
        assert Decimal(encode(dollars(micros)).decode()) * 1_000_000 == micros


def test_seconds_from_milliseconds() -> None:
    assert encode([seconds(3_600_000), seconds(1500), seconds(1), seconds(0)]) == b"[3600,1.5,0.001,0]"


def test_iso_is_utc_with_z_and_keeps_microseconds() -> None:
    assert iso(datetime(2024, 3, 14, 10, 30, tzinfo=UTC)) == "2024-03-14T10:30:00Z"
    plus_two = timezone(timedelta(hours=2))
    assert iso(datetime(2024, 3, 14, 12, 30, 0, 5, tzinfo=plus_two)) == "2024-03-14T10:30:00.000005Z"
    assert iso(None) is None


def test_encoding_sorts_dict_keys_so_bytes_do_not_depend_on_insertion_order() -> None:
    class V(msgspec.Struct):
        b: int
        a: dict[str, int]

    assert encode(V(1, {"z": 1, "a": 2})) == encode(V(1, {"a": 2, "z": 1})) == b'{"b":1,"a":{"a":2,"z":1}}'
