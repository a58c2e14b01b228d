"""Budgets: limit, thresholds, alert rules and the stop-before-the-limit rule."""

from __future__ import annotations

import pytest

from domain.budget import Budget, crossed_thresholds, newly_crossed, would_exceed
from domain.errors import Conflict, ValidationFailed
from tests.unit.domain.conftest import at, refused

LIMIT = 10_000_000  # $10


def test_crossed_thresholds_are_exact_at_the_boundary() -> None:
    assert crossed_thresholds(4_999_999, LIMIT, [50, 80, 100]) == []
    assert crossed_thresholds(5_000_000, LIMIT, [50, 80, 100]) == [50]
    assert crossed_thresholds(LIMIT, LIMIT, [100, 50, 80]) == [50, 80, 100]
    assert crossed_thresholds(10**12, None, [50]) == []


def test_newly_crossed_only_reports_the_jump() -> None:
    assert newly_crossed(4_000_000, 8_500_000, LIMIT, [50, 80, 100]) == [50, 80]
    assert newly_crossed(8_500_000, 9_000_000, LIMIT, [50, 80, 100]) == []


def test_would_exceed_stops_before_the_limit_is_crossed() -> None:
    assert not would_exceed(9_000_000, 1_000_000, LIMIT)  # exactly at the limit is allowed
    assert would_exceed(9_000_000, 1_000_001, LIMIT)
    assert not would_exceed(10**15, 10**15, None)


def test_budget_alerts_once_per_period_and_threshold() -> None:
    budget = Budget.create("usr_1", at())
    with refused(budget, Conflict, "no monthly limit"):
        budget.raise_alert("2026-03", 50, 6_000_000, at(1))
    budget.set_limit(LIMIT, at(1))
    assert budget.alerts_due("2026-03", 8_000_000) == [50, 80]
    budget.raise_alert("2026-03", 50, 6_000_000, at(2))
    with refused(budget, Conflict, "already raised"):
        budget.raise_alert("2026-03", 50, 7_000_000, at(3))
    with refused(budget, Conflict, "has not reached 80%"):
        budget.raise_alert("2026-03", 80, 7_000_000, at(3))
    assert budget.alerts_due("2026-03", 8_000_000) == [80]
    assert budget.alerts_due("2026-04", 8_000_000) == [50, 80]  # a new month starts afresh
    budget.raise_alert("2026-04", 50, 5_000_000, at(4))
    assert budget.alerts == {"2026-03": [50], "2026-04": [50]}


def test_thresholds_are_checked_and_sorted() -> None:
    budget = Budget.create("usr_1", at())
    budget.set_limit(LIMIT, at(1), [90, 25])
    assert budget.thresholds_pct == [25, 90]
    for bad in ([0], [101], [50, 50]):
        with refused(budget, ValidationFailed, "thresholds_pct"):
            budget.set_limit(LIMIT, at(2), bad)
    with refused(budget, ValidationFailed, "monthly_limit_usd_micros"):
        budget.set_limit(0, at(2))
    budget.set_limit(None, at(3))
    assert budget.monthly_limit_usd_micros is None and budget.thresholds_pct == [25, 90]


@pytest.mark.parametrize("period", ["2026-13", "26-03", "2026-3"])
def test_alerts_need_a_real_period(period: str) -> None:
    budget = Budget.create("usr_1", at())
    budget.set_limit(LIMIT, at(1))
    with refused(budget, ValidationFailed, "period"):
        budget.raise_alert(period, 50, LIMIT, at(2))
