"""The console's billing page: the API's figures to the micro-dollar, the budget form, the CSV report."""

from __future__ import annotations

import re

from domain.metering import BudgetAlert, LimitOrders
from domain.money import format_usd, period_of
from tests.api.conftest import Api, User
from tests.api.test_billing import meter, running_job
from tests.console.conftest import csrf_of, signed_in
from tests.usage import meter as meter_run


def test_the_billing_page_shows_the_apis_usage_by_gpu_type_and_job(api: Api, ann: User) -> None:
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 3_601_001)
    meter(api, ann, job_id, 2, 1_234)
    client = signed_in(api, ann)
    page = client.get("/console/billing")
    assert page.status_code == 200 and "<title>Billing · tune console</title>" in page.text
    usage = api.client.get("/billing/usage", headers=ann.headers).json()
    total = usage["current_period"]["total_cost_usd_micros"]
    assert total > 0
    shown = re.search(r'id="month-cost" data-usd-micros="(\d+)">([^<]+)<', page.text)
    assert shown is not None and int(shown[1]) == total and shown[2] == format_usd(total)
    gpu = usage["current_period"]["usage_breakdown"]["a100-80gb"]["total_cost_usd_micros"]
    assert f'data-usd-micros="{gpu}">{format_usd(gpu)}</td>' in page.text
    assert f'<a href="/console/jobs/{job_id}">{job_id}</a>' in page.text
    prices = api.client.get("/billing/pricing", headers=ann.headers).json()["prices"]
    assert format_usd(prices["h200"]["usd_micros_per_hour"]) in page.text
    assert '<label for="budget-limit">' in page.text and csrf_of(page.text)
    assert '<a href="/console/billing" aria-current="page">Billing</a>' in page.text


def test_the_budget_form_sets_the_apis_budget_and_its_alerts_show(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/billing").text)
    form = {"monthly_limit": "0.05", "thresholds": "50, 80%", "_csrf_token": token}
    assert (
        client.post(
            "/console/billing/budget", data={k: v for k, v in form.items() if k[0] != "_"}
        ).status_code
        == 403
    )
    reply = client.post("/console/billing/budget", data=form, follow_redirects=False)
    assert reply.status_code == 303
    budget = api.client.get("/billing/usage", headers=ann.headers).json()["budget"]
    assert budget["monthly_limit_usd_micros"] == 50_000 and budget["thresholds_pct"] == [50, 80]
    job_id = running_job(api, ann)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock()
    alerts = [BudgetAlert(period_of(now), pct, 50_000) for pct in (50, 80)]  # what the ledger orders
    meter_run(app, job_id, 1, 1, 1, "a100-80gb", 2, 60_000, 2_100_000, period_of(now), now,
              orders=LimitOrders(budget_alerts=alerts))  # fmt: skip
    api.settle(ann)
    page = client.get("/console/billing")
    assert 'value="0.05"' in page.text and 'value="50, 80"' in page.text
    alerts = re.search(r'<ul id="billing-alerts">(.*?)</ul>', page.text, re.S)[1]
    assert (
        f"50% of the budget of {period_of(now)}: $0.05 of $0.05" in alerts and "80% of the budget" in alerts
    )
    bad = client.post("/console/billing/budget", data={**form, "monthly_limit": "1.0000001"})
    assert bad.status_code == 400 and "6 decimal places" in bad.text
    bad = client.post("/console/billing/budget", data={**form, "thresholds": "50, 180"})
    assert bad.status_code == 400
    removed = client.post("/console/billing/budget", data={**form, "monthly_limit": ""})
    assert removed.status_code == 200  # followed to the page
    assert (
        api.client.get("/billing/usage", headers=ann.headers).json()["budget"]["monthly_limit_usd_micros"]
        is None
    )


def test_the_csv_report_is_the_replayed_report(api: Api, ann: User) -> None:
    job_id = running_job(api, ann)
    meter(api, ann, job_id, 1, 5_000)
    client = signed_in(api, ann)
    month = api.client.get("/billing/usage", headers=ann.headers).json()["current_period"]["period"]
    reply = client.get("/console/billing/report.csv", params={"month": month})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    assert f'filename="tune-billing-{month}.csv"' in reply.headers["content-disposition"]
    header, row = reply.text.splitlines()[:2]
    report = api.client.get("/billing/report", params={"month": month}, headers=ann.headers).json()
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert cells["job_id"] == job_id and int(cells["cost_usd_micros"]) == report["rows"][0]["cost_usd_micros"]
    assert client.get("/console/billing/report.csv", params={"month": "2026-13"}).status_code == 400
