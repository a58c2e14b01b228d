"""``check_month``: a month's bill recomputed from the events against the billing views."""

from __future__ import annotations

import json

from projections.replay import apps_on, read_events
from projections.report import check_month
from storage import LocalBucket, layout

# write_history meters two jobs ten minutes each on an a100-80gb at $2.10/h: $0.35 each.
EXPECTED_USD_MICROS = 700_000


def _check(bucket: LocalBucket, month: str):
    events = (event for _, event in read_events(apps_on(bucket)("users/u1")))
    return check_month(bucket, "users/u1", events, month)


def test_a_healthy_month_replays_to_the_billed_total(projected: LocalBucket) -> None:
    check = _check(projected, "2024-03")
    assert (check.replayed_usd_micros, check.billed_usd_micros, check.ok) == (EXPECTED_USD_MICROS,) * 2 + (
        True,
    )


def test_a_month_without_usage_has_no_bill_and_nothing_to_replay(projected: LocalBucket) -> None:
    check = _check(projected, "2024-04")
    assert (check.replayed_usd_micros, check.billed_usd_micros, check.ok) == (0, None, True)


def test_an_edited_bill_is_reported(projected: LocalBucket) -> None:
    name = layout.billing("u1")
    view = json.loads(projected.read(name))
    view["current_period"]["total_cost_usd_micros"] -= 1
    projected.write(name, json.dumps(view).encode())
    check = _check(projected, "2024-03")
    assert not check.ok and check.billed_usd_micros == EXPECTED_USD_MICROS - 1
