"""Billing: this month per GPU type and job with the budget, history, prices, a job's cost."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.money import cost_usd_micros, period_of
from projections.store import ViewStore
from storage import layout
from storage.bucket import ObjectStat
from tests.api.conftest import Api, User
from tests.buckets import ForwardingBucket
from tests.usage import meter as meter_run


def running_job(api: Api, user: User) -> str:
    job_id = api.job(user)
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    return job_id


def meter(api: Api, user: User, job_id: str, seq: int, gpu_ms: int, period: str | None = None) -> None:
    now = api.rt.clock()
    app = api.rt.user_app(user.user_id)
    meter_run(app, job_id, 1, seq, seq, "a100-80gb", 2, gpu_ms, 2_100_000, period or period_of(now), now)
    api.settle(user)


def test_an_empty_month(api: Api, ann: User) -> None:
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    month = period_of(datetime.now(UTC))
    assert (
        usage["current_period"]["period"] == month and usage["current_period"]["start_date"] == f"{month}-01"
    )
    assert usage["current_period"]["total_cost_usd_micros"] == 0 and usage["budget"] is None
    assert api.client.get("/billing/history", headers=ann.headers).json()["periods"] == []


def test_budget_usage_and_job_cost_agree_to_the_micro_dollar(api: Api, ann: User) -> None:
    reply = api.client.put(
        "/billing/budget",
        json={"monthly_limit_usd_micros": 10_000_000, "thresholds_pct": [80, 50]},
        headers=ann.headers,
    )
    assert reply.status_code == 200
    assert reply.json()["monthly_limit_usd_micros"] == 10_000_000
    assert reply.json()["monthly_limit"] == "10.00"
    assert reply.json()["thresholds_pct"] == [50, 80]
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 1_000)
    meter(api, ann, job_id, 2, 1_001)
    expected = cost_usd_micros(2_001, 2, 2_100_000)  # one group, priced once from the summed time
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    period = usage["current_period"]
    assert period["total_cost_usd_micros"] == expected
    assert period["usage_breakdown"]["a100-80gb"]["total_cost_usd_micros"] == expected
    assert [(j["job_id"], j["cost_usd_micros"]) for j in period["jobs"]] == [(job_id, expected)]
    assert usage["remaining_usd_micros"] == 10_000_000 - expected
    cost = api.client.get(f"/billing/job/{job_id}/cost", headers=ann.headers).json()
    assert cost["cost_usd_micros"] == expected and cost["status"] == "running"
    assert [(p["period"], p["cost_usd_micros"]) for p in cost["periods"]] == [(period["period"], expected)]
    assert cost["gpu_metrics"]["gpu_ms"] == 2_001


def test_prices(api: Api, ann: User) -> None:
    prices = api.client.get("/billing/pricing", headers=ann.headers).json()["prices"]
    assert prices["cpu"]["usd_micros_per_hour"] == 50_000
    assert prices["h200"]["cost_per_hour"] == "3.60"


def test_a_past_month_moves_to_history(api: Api, ann: User) -> None:
    api.client.put("/billing/budget", json={"monthly_limit_usd_micros": 5_000_000}, headers=ann.headers)
    api.rt.clock = lambda: datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 3_600_000)
    october = api.client.get("/billing/usage", headers=ann.headers).json()
    assert october["current_period"]["period"] == "2026-10"
    api.rt.clock = lambda: datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    assert usage["current_period"]["period"] == "2026-11"
    assert usage["current_period"]["total_cost_usd_micros"] == 0
    assert usage["remaining_usd_micros"] == 5_000_000
    history = api.client.get("/billing/history", headers=ann.headers).json()["periods"]
    assert [p["period"] for p in history] == ["2026-10"]
    assert history[0]["total_cost_usd_micros"] == cost_usd_micros(3_600_000, 2, 2_100_000) == 4_200_000


def test_budget_can_be_removed(api: Api, ann: User) -> None:
    api.client.put("/billing/budget", json={"monthly_limit_usd_micros": 1_000_000}, headers=ann.headers)
    reply = api.client.put("/billing/budget", json={"monthly_limit_usd_micros": None}, headers=ann.headers)
    assert reply.status_code == 200 and reply.json()["monthly_limit_usd_micros"] is None
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    assert usage["remaining_usd_micros"] is None


def test_the_monthly_report_is_replayed_per_job_and_price(api: Api, ann: User) -> None:
    api.rt.clock = lambda: datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 1_000)
    meter(api, ann, job_id, 2, 2_000)
    reply = api.client.get("/billing/report", params={"month": "2026-10"}, headers=ann.headers)
    assert reply.status_code == 200
    report = reply.json()
    expected = cost_usd_micros(3_000, 2, 2_100_000)
    assert report["month"] == "2026-10" and report["total_cost_usd_micros"] == expected
    assert [(r["job_id"], r["gpu_ms"], r["cost_usd_micros"]) for r in report["rows"]] == [
        (job_id, 3_000, expected)
    ]
    empty = api.client.get("/billing/report", params={"month": "2026-09"}, headers=ann.headers).json()
    assert empty["rows"] == [] and empty["total_cost_usd_micros"] == 0
    bad = api.client.get("/billing/report", params={"month": "2026-13"}, headers=ann.headers)
    assert bad.status_code == 400 and bad.json()["error"]["where"] == "month"


def test_a_credited_fault_shows_charged_credited_and_net_in_the_job_cost_usage_and_report(
    api: Api, ann: User
) -> None:
    job_id = running_job(api, ann)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock()
    meter(api, ann, job_id, 1, 10_000)
    app.save_checkpoint(job_id, 1, 5, "ckpt/5", now, gpu_ms_total=6_000)
    meter(api, ann, job_id, 2, 3_000)
    app.mark_lost(job_id, None, now)  # the runner is gone: its 7,000 ms past the checkpoint are credited
    api.settle(ann)
    charged, net = cost_usd_micros(13_000, 2, 2_100_000), cost_usd_micros(6_000, 2, 2_100_000)

    cost = api.client.get(f"/billing/job/{job_id}/cost", headers=ann.headers).json()
    assert (cost["charged_usd_micros"], cost["credited_usd_micros"], cost["cost_usd_micros"]) == (
        charged,
        charged - net,
        net,
    )
    assert cost["credited_gpu_ms"] == 7_000 and cost["gpu_metrics"]["gpu_ms"] == 13_000
    assert [(c["attempt"], c["reason"], c["gpu_ms"]) for c in cost["credits"]] == [(1, "lost", 7_000)]

    period = api.client.get("/billing/usage", headers=ann.headers).json()["current_period"]
    assert (period["charged_usd_micros"], period["credited_usd_micros"]) == (charged, charged - net)
    assert period["total_cost_usd_micros"] == net  # what is paid
    (row,) = period["jobs"]
    assert (row["cost_usd_micros"], row["credited_usd_micros"]) == (net, charged - net)
    assert row["credited_gpu_ms"] == 7_000

    report = api.client.get(f"/billing/report?month={period['period']}", headers=ann.headers).json()
    assert (report["total_cost_usd_micros"], report["credited_usd_micros"]) == (net, charged - net)


def test_a_job_without_credits_shows_none_credited(api: Api, ann: User) -> None:
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 10_000)
    cost = api.client.get(f"/billing/job/{job_id}/cost", headers=ann.headers).json()
    assert cost["charged_usd_micros"] == cost["cost_usd_micros"] == cost_usd_micros(10_000, 2, 2_100_000)
    assert (cost["credited_usd_micros"], cost["credited_gpu_ms"], cost["credits"]) == (0, 0, [])
    period = api.client.get("/billing/usage", headers=ann.headers).json()["current_period"]
    assert "credited_usd_micros" not in period and "credited_usd_micros" not in period["jobs"][0]


def _months(api: Api, user: User, months: list[str]) -> None:
    """A job metered once in each of ``months`` (one hour more in each later one)."""
    job_id = running_job(api, user)
    for seq, month in enumerate(months, 1):
        meter(api, user, job_id, seq, 3_600_000 * seq, period=month)


def test_history_pages_newest_first_and_without_parameters_is_whole(api: Api, ann: User) -> None:
    months = [f"2025-{m:02d}" for m in range(1, 13)] + ["2026-01"]
    api.rt.clock = lambda: datetime(2026, 1, 20, tzinfo=UTC)
    _months(api, ann, months)
    whole = api.client.get("/billing/history", headers=ann.headers).json()
    assert [p["period"] for p in whole["periods"]] == months[-2::-1]  # 2026-01 is this month
    assert whole["has_more"] is False and whole["next"] is None
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "5", **({"after": after} if after else {})}
        reply = api.client.get("/billing/history", params=params, headers=ann.headers)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert len(page["periods"]) <= 5 and page["position"] == whole["position"]
        seen += page["periods"]
        pages += 1
        if not page["has_more"]:
            assert page["next"] is None
            break
        after = page["next"]
    assert pages == 3 and seen == whole["periods"]  # 5 + 5 + 2 months, each once, in order
    only_after = api.client.get("/billing/history", params={"after": after}, headers=ann.headers).json()
    assert [p["period"] for p in only_after["periods"]] == ["2025-02", "2025-01"]  # default limit


def test_history_pages_include_a_month_the_clock_closed(api: Api, ann: User) -> None:
    api.rt.clock = lambda: datetime(2026, 2, 10, tzinfo=UTC)
    _months(api, ann, ["2025-12", "2026-01", "2026-02"])
    api.rt.clock = lambda: datetime(2026, 3, 1, 0, 5, tzinfo=UTC)  # February is over, no March event yet
    first = api.client.get("/billing/history", params={"limit": "2"}, headers=ann.headers).json()
    assert [p["period"] for p in first["periods"]] == ["2026-02", "2026-01"] and first["has_more"]
    rest = api.client.get("/billing/history", params={"after": first["next"]}, headers=ann.headers).json()
    assert [p["period"] for p in rest["periods"]] == ["2025-12"] and not rest["has_more"]


def test_history_refuses_a_bad_cursor_or_limit(api: Api, ann: User) -> None:
    jobs_cursor = "WzEsImpvYnMiLCJ4Il0"  # a cursor of the jobs list
    for params in ({"after": "nope"}, {"after": jobs_cursor}, {"limit": "0"}, {"limit": "101"}):
        reply = api.client.get("/billing/history", params=params, headers=ann.headers)
        assert reply.status_code == 400, (params, reply.text)


def test_usage_reads_billing_json_alone(api: Api, ann: User) -> None:
    """However long the history, ``/billing/usage`` reads one object: the current month's billing.json
    (a server that did not write the views, so every read reaches the bucket)."""
    api.rt.clock = lambda: datetime(2026, 1, 20, tzinfo=UTC)
    _months(api, ann, [f"2025-{m:02d}" for m in range(1, 13)] + ["2026-01"])
    reads: list[str] = []

    class Recording(ForwardingBucket):
        def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
            reads.append(name)
            return super().read_with_stat(name)

        def read(self, name: str) -> bytes:
            reads.append(name)
            return super().read(name)

    api.rt.views = ViewStore(Recording(api.rt.bucket))  # nothing fed by a projector: all read
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    assert usage["current_period"]["period"] == "2026-01"
    mine = [name for name in reads if name.startswith(layout.user_partition(ann.user_id))]
    assert mine == [layout.user_info(ann.user_id), layout.billing(ann.user_id)]  # the guard's, then ours
    assert len(api.rt.bucket.read(mine[0])) < len(api.rt.bucket.read(layout.billing_history(ann.user_id)))
