"""The admission rule: quota first, then the job's max_cost (a warning), then the month's budget."""

from __future__ import annotations

import pytest

from domain.admission import check_admission
from domain.errors import Forbidden

BASE = {
    "active_jobs": 0,
    "max_concurrent_jobs": 2,
    "estimate_usd_micros": 1_000_000,
    "max_cost_usd_micros": None,
    "remaining_usd_micros": None,
    "force": False,
}


def test_a_job_within_quota_and_budget_starts_without_warnings() -> None:
    assert check_admission(**{**BASE, "remaining_usd_micros": 1_000_000}) == []


def test_the_quota_refuses_even_with_force() -> None:
    with pytest.raises(Forbidden, match="2 of 2 concurrent jobs") as refused:
        check_admission(**{**BASE, "active_jobs": 2, "force": True})
    assert refused.value.code == "quota_exceeded"


def test_no_quota_means_no_limit() -> None:
    assert check_admission(**{**BASE, "active_jobs": 99, "max_concurrent_jobs": None}) == []


def test_over_budget_is_refused_naming_force_and_both_amounts() -> None:
    with pytest.raises(Forbidden, match=r"\$1\.00 exceeds .* \(\$0\.999999\)") as refused:
        check_admission(**{**BASE, "remaining_usd_micros": 999_999})
    assert (refused.value.code, refused.value.where) == ("over_budget", "force")


def test_the_over_budget_refusal_names_the_cli_flag_as_well_as_the_api_field() -> None:
    with pytest.raises(Forbidden) as refused:
        check_admission(**{**BASE, "remaining_usd_micros": 0})
    assert "pass force (tune start --force)" in refused.value.message


def test_force_starts_over_budget_with_a_warning() -> None:
    warnings = check_admission(**{**BASE, "remaining_usd_micros": 0, "force": True})
    assert len(warnings) == 1 and "started anyway (force)" in warnings[0]


def test_an_estimate_over_max_cost_is_a_warning_not_a_refusal() -> None:
    warnings = check_admission(**{**BASE, "max_cost_usd_micros": 500_000})
    assert warnings == ["the estimate $1.00 exceeds max_cost $0.50; will be stopped when it reaches max_cost"]
