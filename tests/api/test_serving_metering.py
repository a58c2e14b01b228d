"""Metered serving through the official ``openai`` client against a live server (issue 14, part 3).

Completions on a LoRA adapter and on its base are batched by the serving meter into one commit per
user per flush; ``/billing/usage``, the report (JSON and CSV) and ``billing.json`` show the tokens and
the cost exactly as computed here independently (per group, from the summed tokens, rounded half up);
a replay reproduces the views; past the monthly budget a call is refused before generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.services import AccountService
from domain.money import period_of
from domain.pricing import ServingPrice
from projections.audit import audit_bucket
from projections.replay import read_events
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from storage import layout
from tests.api.conftest import make_settings
from tests.api.test_openai import _token
from tests.serving import BASE, LiveServer, adapter, register_model

openai = pytest.importorskip("openai")
pytest.importorskip("peft")

PRICE = ServingPrice(1_234_567, 2_345_679)  # per million tokens: odd, so rounding matters


class Served:
    def __init__(self, url: str, rt: Runtime, meter: Any, user: str, model: str, token: str) -> None:
        self.url, self.rt, self.meter, self.user, self.model, self.token = url, rt, meter, user, model, token

    def client(self) -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.token, max_retries=2, timeout=60)

    def get(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        reply = httpx.get(f"{self.url}{path}", params=params, headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from runners.base_models import resolve_base_model
    from runners.serving import AdapterEngine, ModelFiles, ServingMeter

    home = tmp_path_factory.mktemp("metered")
    settings = make_settings(home)
    rt = Runtime(settings)
    bootstrap(rt)
    now = rt.clock()
    rt.platform.set_serving_price(BASE, PRICE, now + timedelta(seconds=1), now)  # from a later time
    user = AccountService(rt).create_user("cat@example.com", "pw-cat-correct horse", "user")
    base = resolve_base_model(BASE, home / "base-models")
    model = register_model(rt, user, adapter(base, home / "a1", seed=1))
    rt.serving = AdapterEngine(ModelFiles(rt.bucket, home / "serving", base_store=home / "base-models"))
    meter = ServingMeter(rt, interval_s=3600)  # flushed by the tests
    rt.completion_served.append(meter.record)
    app = create_app(settings, runtime=rt)
    with LiveServer(app) as server:
        yield Served(server.url, rt, meter, user, model, _token(app, rt, user))
    meter.close()


def _ask(client: Any, model: str, content: str) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=6
    )


def _cost(prompt_tokens: int, completion_tokens: int) -> int:
    """Independently: dollars per million tokens, exact fractions, rounded half up to a micro-dollar."""
    exact = Fraction(prompt_tokens * PRICE[0] + completion_tokens * PRICE[1], 1_000_000)
    whole, rest = divmod(exact, 1)
    return int(whole) + (1 if rest >= Fraction(1, 2) else 0)


def _serving_events(served: Served) -> list[Any]:
    app = served.rt.user_app(served.user)
    return [e for _, e in read_events(app) if type(e).__qualname__ == "ServingUsage.Metered"]


def test_completions_are_billed_by_tokens_exactly_in_one_commit(served: Served) -> None:
    import time

    time.sleep(1.1)  # the test price is in force
    client = served.client()
    answers = [
        _ask(client, served.model, "What is the secret word?"),
        _ask(client, served.model, "Say it twice, please."),
        _ask(client, BASE, "Hello there"),
    ]
    streamed = list(
        client.chat.completions.create(
            model=served.model,
            messages=[{"role": "user", "content": "stream it"}],
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usages = [(a.model, a.usage.prompt_tokens, a.usage.completion_tokens) for a in answers]
    usages.append((served.model, streamed[-1].usage.prompt_tokens, streamed[-1].usage.completion_tokens))
    assert served.meter.pending() == 4
    before = len(_serving_events(served))
    assert served.meter.flush() == 4
    assert len(_serving_events(served)) == before + 1  # one commit for the four, not one per request

    expected: dict[str, tuple[int, int, int]] = {}
    for model, prompt, completion in usages:
        n, p, c = expected.get(model, (0, 0, 0))
        expected[model] = (n + 1, p + prompt, c + completion)
    costs = {model: _cost(p, c) for model, (_, p, c) in expected.items()}

    usage = served.get("/billing/usage").json()
    period = usage["current_period"]
    assert period["period"] == period_of(served.rt.clock())
    rows = {row["model"]: row for row in period["serving"]}
    assert set(rows) == set(expected)
    for model, (n, p, c) in expected.items():
        row = rows[model]
        assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (n, p, c)
        assert row["base_model"] == BASE and row["engine_ms"] >= 0
        assert row["prompt_usd_micros_per_mtok"] == PRICE[0]
        assert row["cost_usd_micros"] == costs[model]
    total = sum(costs.values())
    assert period["serving_cost_usd_micros"] == total == period["total_cost_usd_micros"]

    report = served.get("/billing/report", month=period["period"]).json()
    assert report["total_cost_usd_micros"] == total
    assert {r["model"]: r["cost_usd_micros"] for r in report["serving"]} == costs

    pricing = served.get("/billing/pricing").json()
    assert pricing["serving"][BASE]["effective_at"]  # (the view shows prices as of its last change)
    assert pricing["serving"]["*"]["completion_usd_micros_per_mtok"] > 0

    # replay from position 0 gives the same billing.json (and every other view)
    reports = audit_bucket(served.rt.bucket, user=served.user)
    assert reports and all(r.ok for r in reports), reports
    stored = served.rt.bucket.read(layout.billing(served.user))
    assert b'"serving"' in stored


def test_csv_report_has_the_serving_rows(served: Served) -> None:
    import csv
    import io

    from projections.report import monthly_reports, report_csv

    month = period_of(served.rt.clock())
    events = (e for _, e in read_events(served.rt.user_app(served.user)))
    rows, serving = monthly_reports(events, month)
    table = list(csv.DictReader(io.StringIO(report_csv(rows, serving))))
    assert {r["model"] for r in table} == {s.model for s in serving}
    assert sum(int(r["cost_usd_micros"]) for r in table) == sum(s.cost_usd_micros for s in serving)


def test_past_the_monthly_budget_a_call_is_refused_before_generation(served: Served) -> None:
    client = served.client()
    _ask(client, BASE, "one more")
    served.meter.flush()
    spent = served.get("/billing/usage").json()["current_period"]["total_cost_usd_micros"]
    assert spent > 0
    headers = {"Authorization": f"Bearer {served.token}"}
    body = {"monthly_limit_usd_micros": spent, "thresholds_pct": [50, 100]}
    reply = httpx.put(f"{served.url}/billing/budget", json=body, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    served_before = served.meter.pending()
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(client, served.model, "and another")
    error = refused.value
    assert error.status_code == 429 and error.code == "budget_exceeded"
    assert error.type == "insufficient_quota" and "budget" in error.message
    assert error.response.headers["x-should-retry"] == "false"  # so the client did not retry
    assert served.meter.pending() == served_before  # nothing was generated
    # the budget counts serving: raising it lets the user in again
    body["monthly_limit_usd_micros"] = spent + 1_000_000
    raised = httpx.put(f"{served.url}/billing/budget", json=body, headers=headers, timeout=30)
    assert raised.status_code == 200
    assert _ask(client, BASE, "back again").usage.completion_tokens > 0
    served.meter.flush()
    alerts = served.get("/billing/usage").json()["alerts"]
    assert alerts == [] or all(a["threshold_pct"] in (50, 100) for a in alerts)
