"""The price list: a change applies from its effective time only; history is append-only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.applications import PlatformApp
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.gpu_types import GPU_TYPES
from domain.pricing import DEFAULT_PRICES_USD_MICROS_PER_HOUR, PriceList, check_gpu_type
from tests.unit.domain.conftest import at, refused


def test_price_at_honours_effective_time() -> None:
    prices = PriceList.create(at())
    prices.set_price("h100-80gb", 2_900_000, at(10), at())
    prices.set_price("h100-80gb", 2_500_000, at(60), at(1))  # announced early, effective later
    with pytest.raises(NotFound, match="no price for GPU type 'h100-80gb'"):
        prices.price_at("h100-80gb", at(9))
    assert prices.price_at("h100-80gb", at(10)) == 2_900_000
    assert prices.price_at("h100-80gb", at(60) - timedelta(microseconds=1)) == 2_900_000
    assert prices.price_at("h100-80gb", at(60)) == 2_500_000
    assert prices.price_at("h100-80gb", at(10_000)) == 2_500_000
    with pytest.raises(NotFound, match="priced: h100-80gb"):
        prices.price_at("t4", at(100))


def test_history_is_never_rewritten() -> None:
    prices = PriceList.create(at())
    prices.set_price("t4", 350_000, at(60), at())
    for effective in (at(60), at(30)):
        with refused(prices, Conflict, "must take effect later"):
            prices.set_price("t4", 1, effective, at(1))
    assert prices.entries() == [("t4", at(60), 350_000)]


def test_a_price_takes_effect_now_or_later_never_in_the_past() -> None:
    """Usage already metered keeps its price: a back-dated price would contradict the bills."""
    prices = PriceList.create(at())
    for effective in (at(-1), at(10) - timedelta(microseconds=1), at(-60 * 24 * 365)):
        with refused(prices, ValidationFailed, "is in the past") as info:
            prices.set_price("t4", 350_000, effective, at(10))
        assert info.value.where == "effective_at"
        assert "a price takes effect now or later" in info.value.message
    prices.set_price("t4", 350_000, at(10), at(10))  # now: the CLI's default
    prices.set_price("t4", 400_000, at(60), at(20))  # later: scheduled
    with refused(prices, ValidationFailed, "is in the past"):  # before the schedule and before now
        prices.set_price("t4", 1, at(30), at(40))
    assert prices.entries() == [("t4", at(10), 350_000), ("t4", at(60), 400_000)]


def test_the_platform_refuses_a_past_price_and_saves_nothing() -> None:
    platform = PlatformApp()
    assert "t4" in platform.ensure_default_prices(at())  # effective at its own ``at``: now
    with pytest.raises(ValidationFailed, match="is in the past"):
        platform.set_price("t4", 1, at(), at(5))
    assert platform.price_at("t4", at(5)) == DEFAULT_PRICES_USD_MICROS_PER_HOUR["t4"]  # nothing saved
    assert platform.set_price("t4", 400_000, at(5), at(5)).effective_at == at(5)
    assert platform.price_at("t4", at(5)) == 400_000


@pytest.mark.parametrize(
    ("gpu_type", "price", "where"),
    [
        ("H100", 1, "gpu_type"),
        ("a/b", 1, "gpu_type"),
        ("t4", -5, "usd_micros_per_hour"),
        ("t4", 1.5, "usd_micros_per_hour"),
    ],
)
def test_set_price_refuses_bad_fields(gpu_type: str, price: int, where: str) -> None:
    prices = PriceList.create(at())
    with refused(prices, ValidationFailed) as info:
        prices.set_price(gpu_type, price, at(), at())
    assert info.value.where == where


def test_default_prices_are_the_gpu_table_s_and_cpu_is_not_free() -> None:
    assert {n: g.usd_micros_per_hour for n, g in GPU_TYPES.items()} == DEFAULT_PRICES_USD_MICROS_PER_HOUR
    assert {"cpu", "t4", "h100-80gb", "h200"} <= set(GPU_TYPES)
    assert all(isinstance(p, int) and p > 0 for p in DEFAULT_PRICES_USD_MICROS_PER_HOUR.values())
    assert all(g.tokens_per_s > 0 for g in GPU_TYPES.values())
    for name in GPU_TYPES:
        check_gpu_type(name)  # every row is a valid GPU type name
    assert DEFAULT_PRICES_USD_MICROS_PER_HOUR["cpu"] < DEFAULT_PRICES_USD_MICROS_PER_HOUR["t4"]
    assert DEFAULT_PRICES_USD_MICROS_PER_HOUR["h200"] > DEFAULT_PRICES_USD_MICROS_PER_HOUR["h100-80gb"]
