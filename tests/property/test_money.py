"""Properties of the money rule: exact, never negative, priced per group, printable and parseable."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.money import (
    MICROS_PER_USD,
    UsageGroupKey,
    cost_usd_micros,
    format_usd,
    parse_usd,
    summarize_job_cost,
)

ms = st.integers(min_value=0, max_value=10**12)  # up to ~31 GPU-years in one group
counts = st.integers(min_value=1, max_value=16)
prices = st.integers(min_value=0, max_value=100_000_000)  # up to $100 per GPU-hour
micros = st.integers(min_value=-(10**15), max_value=10**15)


def reference(gpu_ms: int, gpu_count: int, price: int) -> int:
    exact = Decimal(gpu_ms) * gpu_count * price / Decimal(3_600_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@given(ms, counts, prices)
def test_cost_equals_the_decimal_reference_and_is_never_negative(
    gpu_ms: int, gpu_count: int, price: int
) -> None:
    cost = cost_usd_micros(gpu_ms, gpu_count, price)
    assert cost == reference(gpu_ms, gpu_count, price)
    assert cost >= 0


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=50), counts, prices)
def test_a_group_is_priced_once_from_its_summed_milliseconds(
    batches: list[int], gpu_count: int, price: int
) -> None:
    key = UsageGroupKey("2026-03", "job_1", "h100-80gb", gpu_count, price)
    summary = summarize_job_cost("job_1", [(key, b) for b in batches])
    assert summary.gpu_ms == sum(batches)
    assert summary.cost_usd_micros == cost_usd_micros(sum(batches), gpu_count, price)
    per_heartbeat = sum(cost_usd_micros(b, gpu_count, price) for b in batches)
    assert abs(summary.cost_usd_micros - per_heartbeat) <= len(batches)  # the error the rule avoids


@given(ms, ms, counts, prices)
def test_cost_is_monotonic_in_time(a: int, b: int, gpu_count: int, price: int) -> None:
    low, high = sorted((a, b))
    assert cost_usd_micros(low, gpu_count, price) <= cost_usd_micros(high, gpu_count, price)


@given(st.dictionaries(st.tuples(st.sampled_from(["t4", "h200"]), counts, prices), ms, max_size=6))
def test_a_job_costs_the_sum_of_its_groups(groups: dict[tuple[str, int, int], int]) -> None:
    pairs = [(UsageGroupKey("2026-03", "job_1", t, c, p), m) for (t, c, p), m in groups.items()]
    summary = summarize_job_cost("job_1", pairs)
    assert summary.cost_usd_micros == sum(cost_usd_micros(m, c, p) for (_, c, p), m in groups.items())
    assert summary.cost_usd_micros == sum(line.cost_usd_micros for line in summary.lines)


@given(micros)
def test_exact_formatting_round_trips(amount: int) -> None:
    text = format_usd(amount)
    assert parse_usd(text, allow_negative=True) == amount
    assert text.startswith("-$" if amount < 0 else "$")


@given(micros, st.integers(min_value=0, max_value=6))
def test_rounded_formatting_equals_decimal_rounding(amount: int, places: int) -> None:
    expected = (Decimal(amount) / MICROS_PER_USD).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format_usd(amount, places=places)
    assert Decimal(text.replace("$", "").replace(",", "")) == expected


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_parse_is_exact_for_up_to_six_places(amount: Decimal) -> None:
    assert parse_usd(str(amount)) == int(amount * MICROS_PER_USD)
    assert parse_usd(f"${amount:,}") == int(amount * MICROS_PER_USD)
