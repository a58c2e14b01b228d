"""Money examples: the rounding rule at its edges, parsing and printing dollars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from domain.errors import ValidationFailed
from domain.money import (
    UsageGroupKey,
    cost_usd_micros,
    dollars,
    format_usd,
    parse_usd,
    period_of,
    summarize_job_cost,
)


def test_one_gpu_hour_costs_the_hourly_price() -> None:
    assert cost_usd_micros(3_600_000, 1, 2_900_000) == 2_900_000
    assert cost_usd_micros(3_600_000, 8, 2_900_000) == 23_200_000


def test_half_a_micro_dollar_rounds_up_and_just_below_rounds_down() -> None:
    assert cost_usd_micros(1, 1, 1_800_000) == 1  # exactly 0.5 micro-dollars
    assert cost_usd_micros(1, 1, 1_799_999) == 0
    assert cost_usd_micros(0, 4, 3_600_000) == 0


def test_pricing_per_group_not_per_heartbeat() -> None:
    key = UsageGroupKey("2026-03", "job_1", "t4", 1, 1_800_000)
    summary = summarize_job_cost("job_1", [(key, 1)] * 3)  # three 1 ms heartbeats
    assert summary.cost_usd_micros == cost_usd_micros(3, 1, 1_800_000) == 2  # not 3 x round(0.5) = 3
    assert summary.lines[0].gpu_ms == 3


def test_cost_refuses_negative_or_float_inputs() -> None:
    with pytest.raises(ValidationFailed, match="gpu_ms"):
        cost_usd_micros(-1, 1, 1)
    with pytest.raises(ValidationFailed, match="usd_micros_per_hour"):
        cost_usd_micros(1, 1, 2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("$12.34", 12_340_000),
        ("12.34", 12_340_000),
        (" $1,000 ", 1_000_000_000),
        ("0.000001", 1),
        (".5", 500_000),
        ("7", 7_000_000),
        (Decimal("0.25"), 250_000),
        (3, 3_000_000),
    ],
)
def test_parse_usd(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize(
    "text", ["", "$", "abc", "1.0000001", "-1", "1e3", "NaN", "1_000", "$$1", "1,00", "--1"]
)
def test_parse_usd_refuses(text: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_usd(text, where="max_cost")
    assert info.value.where == "max_cost"


def test_parse_usd_refuses_floats_but_takes_negatives_when_asked() -> None:
    with pytest.raises(ValidationFailed, match="not a float"):
        parse_usd(0.1)  # type: ignore[arg-type]
    assert parse_usd("-$0.50", allow_negative=True) == -500_000


@pytest.mark.parametrize(
    ("micros", "places", "text"),
    [
        (12_340_000, None, "$12.34"),
        (123, None, "$0.000123"),
        (0, None, "$0.00"),
        (-500_000, None, "-$0.50"),
        (1_234_567_891, 2, "$1,234.57"),
        (5_000, 2, "$0.01"),
        (4_999, 2, "$0.00"),
        (1_500_000, 0, "$2"),
    ],
)
def test_format_usd(micros: int, places: int | None, text: str) -> None:
    assert format_usd(micros, places=places) == text


def test_format_usd_without_grouping_and_exact_decimal_dollars() -> None:
    assert format_usd(1_234_500_000, grouping=False) == "$1234.50"
    assert format_usd(-1_234_567_891, places=2, grouping=False) == "-$1234.57"
    assert [str(dollars(m)) for m in (10_000_000, 156_780_000, 123, 0, -500_000)] == [
        "10.00", "156.78", "0.000123", "0.00", "-0.50"
    ]  # fmt: skip


def test_period_is_the_utc_month() -> None:
    assert period_of(datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == "2026-03"
    plus_two = timezone(timedelta(hours=2))
    assert period_of(datetime(2026, 4, 1, 1, 0, tzinfo=plus_two)) == "2026-03"  # 23:00 UTC on 31 March
    with pytest.raises(ValidationFailed):
        period_of(datetime(2026, 3, 1))


def test_usage_group_key_round_trips_as_text() -> None:
    key = UsageGroupKey("2026-03", "job_1", "a100-80gb", 8, 2_100_000)
    assert UsageGroupKey.decode(key.encode()) == key
