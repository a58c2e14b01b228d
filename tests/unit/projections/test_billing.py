"""The billing fold: billing.json (seed schema, budget, alerts) and billing_history.json."""

from __future__ import annotations

from typing import Any

import msgspec

from api import schemas
from api.services.billing import _StoredBilling
from projections import billing
from projections.render import decode, encode
from tests.unit.projections.builders import Apps, UserLog


def _state(log: UserLog) -> billing.BillingState:
    state = billing.BillingState()
    for notification in log.app.recorder.select_notifications(start=1, limit=10_000):
        state = billing.fold(state, log.app.mapper.to_domain_event(notification))
    return state


def _views(log: UserLog) -> tuple[dict[str, Any], dict[str, Any]]:
    state = _state(log)
    return decode(encode(billing.billing_view(state, 1))), decode(encode(billing.history_view(state, 1)))


def _running(log: UserLog, job_id: str, **kw: Any) -> None:
    log.submit(job_id, **kw)
    log.run(job_id)


def test_current_period_has_the_seed_shape_and_exact_totals() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1", gpu_type="a100-80gb", gpu_count=1)
    log.meter("j1", 3_600_000, 10_000_000)  # one hour at $10/h
    _running(log, "j2", gpu_type="h100-80gb", gpu_count=2)
    log.meter("j2", 1_800_000, 2_900_000)  # half an hour on two GPUs at $2.90/h
    view, history = _views(log)

    period = view["current_period"]
    assert period["start_date"] == "2024-03-01" and period["period"] == "2024-03"
    assert period["total_cost_usd_micros"] == 10_000_000 + 2_900_000
    assert period["total_cost"] == 12.9
    assert period["usage_breakdown"]["a100-80gb"] | {"rates": None} == {
        "seconds": 3600,
        "cost_per_hour": 10.0,
        "total_cost": 10.0,
        "gpu_ms": 3_600_000,
        "cost_per_hour_usd_micros": 10_000_000,
        "total_cost_usd_micros": 10_000_000,
        "rates": None,
    }
    assert period["usage_breakdown"]["h100-80gb"]["seconds"] == 3600  # GPU-seconds: 30 min x 2 GPUs
    assert period["jobs"] == [
        {
            "job_id": "j1",
            "gpu_type": "a100-80gb",
            "duration_seconds": 3600,
            "cost": 10.0,
            "gpu_seconds": 3600,
            "cost_usd_micros": 10_000_000,
        },
        {
            "job_id": "j2",
            "gpu_type": "h100-80gb",
            "duration_seconds": 1800,
            "cost": 2.9,
            "gpu_seconds": 3600,
            "cost_usd_micros": 2_900_000,
        },
    ]
    assert view["budget"] is None and view["remaining"] is None and view["alerts"] == []
    assert history["periods"] == []


def test_money_is_rendered_exactly_never_through_a_float() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1", gpu_count=1)
    log.meter("j1", 1, 443_000)
    log.meter("j1", 3_599_999, 443_000)  # one group: an hour in all, $0.443
    state = _state(log)
    raw = encode(billing.billing_view(state, 1))
    assert b'"total_cost":0.443,' in raw and b'"total_cost_usd_micros":443000' in raw


def test_each_group_is_priced_once_from_its_summed_milliseconds() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1", gpu_count=1)
    for _ in range(4):
        log.meter("j1", 1, 1_800_000)  # 0.5 micro each: per heartbeat would give 4, summed gives 2
    view, _ = _views(log)
    assert view["current_period"]["total_cost_usd_micros"] == 2


def test_price_change_within_a_month_gives_separate_rates() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1", gpu_count=1)
    log.meter("j1", 3_600_000, 2_000_000)
    log.meter("j1", 3_600_000, 3_000_000)
    gpu = _views(log)[0]["current_period"]["usage_breakdown"]["a100-80gb"]
    assert gpu["cost_per_hour_usd_micros"] == 3_000_000  # the latest price seen
    assert [(r["usd_micros_per_hour"], r["seconds"], r["total_cost_usd_micros"]) for r in gpu["rates"]] == [
        (2_000_000, 3600, 2_000_000),
        (3_000_000, 3600, 3_000_000),
    ]
    assert gpu["total_cost_usd_micros"] == 5_000_000


def test_a_new_month_moves_the_old_one_into_history_and_late_usage_lands_there() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1", gpu_count=1)
    log.meter("j1", 3_600_000, 1_000_000, period="2024-02")
    log.meter("j1", 3_600_000, 1_000_000, period="2024-03")
    log.meter("j1", 7_200_000, 1_000_000, period="2024-04")
    old = _state(log)
    log.meter("j1", 3_600_000, 1_000_000, period="2024-03")  # late batch for a closed month
    new = _state(log)

    view = decode(encode(billing.billing_view(new, 1)))
    history = decode(encode(billing.history_view(new, 1)))
    assert view["current_period"]["period"] == "2024-04"
    assert view["current_period"]["total_cost_usd_micros"] == 2_000_000
    assert [(p["period"], p["total_cost_usd_micros"]) for p in history["periods"]] == [
        ("2024-03", 2_000_000),
        ("2024-02", 1_000_000),
    ]
    assert history["periods"][0]["start_date"] == "2024-03-01" and history["periods"][0]["alerts"] == []
    events = log.app.recorder.select_notifications(start=1, limit=1000)
    late = log.app.mapper.to_domain_event(events[-1])
    assert billing.touched(old.current, new, late) == {billing.HISTORY}


def test_budget_remaining_and_alerts_of_the_current_period() -> None:
    log = UserLog(Apps()("users/u1"))
    log.set_budget(10_000_000, [50, 80, 100])
    _running(log, "j1", gpu_count=1)
    log.meter("j1", 3_600_000, 6_000_000)
    log.budget_alert("2024-03", 50, 6_000_000)
    view, _ = _views(log)
    assert view["budget"] == {
        "monthly_limit": 10.0,
        "monthly_limit_usd_micros": 10_000_000,
        "thresholds_pct": [50, 80, 100],
        "set_at": "2024-03-01T09:02:00Z",
    }
    assert view["remaining_usd_micros"] == 4_000_000 and view["remaining"] == 4.0
    assert [(a["period"], a["threshold_pct"], a["spent_usd_micros"]) for a in view["alerts"]] == [
        ("2024-03", 50, 6_000_000)
    ]
    log.meter("j1", 7_200_000, 6_000_000)
    assert _views(log)[0]["remaining_usd_micros"] == 0  # never negative


def test_budget_without_limit() -> None:
    log = UserLog(Apps()("users/u1"))
    log.set_budget(None)
    view, _ = _views(log)
    assert view["budget"]["monthly_limit"] is None and view["remaining"] is None


def test_touched_names_the_views_an_event_changes() -> None:
    log = UserLog(Apps()("users/u1"))
    log.submit("j1")
    before = _state(log)
    log.set_budget(1_000_000)
    after = _state(log)
    events = log.app.recorder.select_notifications(start=1, limit=1000)
    submitted = log.app.mapper.to_domain_event(events[0])
    budget_set = log.app.mapper.to_domain_event(events[-1])
    assert billing.touched(None, before, submitted) == set()
    assert billing.touched(before.current, after, budget_set) == {billing.BILLING}


def _as_served(log: UserLog) -> tuple[Any, Any]:
    """billing.json and billing_history.json decoded as the API decodes them."""
    state = _state(log)
    return (
        msgspec.json.decode(encode(billing.billing_view(state, 1)), type=_StoredBilling),
        msgspec.json.decode(encode(billing.history_view(state, 1)), type=schemas.BillingHistory),
    )


def _empty(period: str) -> schemas.Period:
    return schemas.Period(period=period, start_date=f"{period}-01")


def test_as_of_a_later_month_reads_as_the_views_will_once_that_month_has_an_event() -> None:
    log = UserLog(Apps()("users/u1"))
    log.set_budget(20_000_000, [50])
    _running(log, "j1")
    log.meter("j1", 3_600_000, 10_000_000, period="2024-03")
    log.budget_alert("2024-03", 50, 10_000_000)
    march, march_history = _as_served(log)

    rolled, rolled_history = billing.as_of(march, march_history, "2024-04", empty_period=_empty)
    log.meter("j1", 1_000, 10_000_000, period="2024-04", seq=1)  # April's first event
    _, april_history = _as_served(log)

    assert msgspec.to_builtins(rolled_history.periods) == msgspec.to_builtins(april_history.periods)
    assert rolled_history.periods[0].period == "2024-03" and rolled_history.periods[0].alerts  # its alert
    assert rolled.current_period.period == "2024-04" and rolled.current_period.total_cost_usd_micros == 0
    assert rolled.alerts == [] and rolled.remaining_usd_micros == 20_000_000


def test_as_of_the_stored_month_changes_nothing() -> None:
    log = UserLog(Apps()("users/u1"))
    _running(log, "j1")
    log.meter("j1", 3_600_000, 10_000_000, period="2024-03")
    march, history = _as_served(log)
    assert billing.as_of(march, history, "2024-03", empty_period=_empty) == (march, history)
