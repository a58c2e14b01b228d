"""The quick start's last word on cost: the estimate (range, source) beside what was billed."""

from __future__ import annotations

from runners.main_job import estimate_beside_cost


def test_the_estimate_is_printed_beside_the_billed_cost() -> None:
    started = {
        "estimate_usd_micros": 1_678,
        "estimate_low_usd_micros": 1_342,
        "estimate_high_usd_micros": 2_098,
        "estimate_basis": "measured from 1 job",
    }
    assert estimate_beside_cost(started, 1_700) == (
        "estimated $0.001678 ($0.001342 to $0.002098, measured from 1 job) \u2014 billed $0.0017"
        " (estimate / actual 0.99x)"
    )


def test_a_reply_of_an_older_server_shows_the_estimate_alone() -> None:
    shown = estimate_beside_cost({"estimate_usd_micros": 1_678}, 0)
    assert shown == "estimated $0.001678 \u2014 billed $0.00"
