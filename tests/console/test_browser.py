"""The console in a real browser (Playwright driving Debian's Chromium) against a real ``tune serve``
(``tests.cli.test_live``'s server: embedded dispatcher, real tiny-llama training on the CPU).

Flows: sign in through the form; the jobs list; a running job's page whose loss curve gains points
over server-sent events (the job runs until it is stopped, so the curve grows however fast the machine
trains); the job stopped from its page; the cost on the page equal to the API's to the micro-dollar;
another user's job page answering 404; a form POST without a CSRF token
refused. Then the second half's pages: a dataset uploaded through the page (a bad one shows its
failing lines), the billing page's cost equal to ``GET /billing/usage``'s to the micro-dollar, the
chat playground answering, an operator creating and suspending a user. Each page is saved as a
screenshot under ``$TUNE_SCREENSHOTS`` (default: the test's tmp folder), at a laptop's size and a
phone's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_live import CHAT, ROOT, Server, server  # noqa: F401  (the server fixture)

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
CONFIG = {"method": "lora", "max_steps": 80, "batch_size": 2, "lr_scheduler": "constant",
          "heartbeat_interval_seconds": 0.5, "checkpoint_every_steps": 40, "gpu_type": "cpu"}  # fmt: skip
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TUNE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Client:
    """The API as the admin of ``tune serve``."""

    def __init__(self, srv: Server) -> None:
        body = httpx.post(f"{srv.url}/auth/login", json={"email": srv.email, "password": srv.password}).json()
        self.user_id = body["user_id"]
        self.http = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {body['token']}"})

    def dataset(self, rows: int = 24) -> str:
        data = "".join(CHAT % (i, i) for i in range(rows)).encode()
        reply = self.http.post(
            f"/datasets/{self.user_id}/upload", params={"filename": "train.jsonl"}, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert reply.status_code == 201, reply.text
        return reply.json()["dataset_id"]  # type: ignore[no-any-return]

    def start(self, dataset_id: str, **config: Any) -> str:
        body = {"base_model": "tiny-llama", "dataset_id": dataset_id, "config": {**CONFIG, **config}}
        reply = self.http.post(f"/fine-tune/{self.user_id}/start", json=body)
        assert reply.status_code == 201, reply.text
        return reply.json()["job_id"]  # type: ignore[no-any-return]

    def status(self, job_id: str) -> dict[str, Any]:
        return self.http.get(f"/fine-tune/{job_id}/status").json()  # type: ignore[no-any-return]


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sign_in(page: Any, srv: Server) -> None:
    page.goto(f"{srv.url}/console/jobs")  # no session: to the form, and back after
    assert page.title() == "Sign in · tune console"
    page.get_by_label("Email").fill(srv.email)
    page.get_by_label("Password").fill(srv.password)
    page.keyboard.press("Enter")  # the keyboard alone signs in
    page.wait_for_url(f"{srv.url}/console/jobs")


def _settled(read: Any, still_s: float = 2.0, timeout: float = 60) -> Any:
    """``read()`` once it has not changed for ``still_s`` (the ledger has metered the last heartbeats)."""
    value, since, deadline = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < still_s:
        assert time.monotonic() < deadline, f"still changing after {timeout:.0f} s: {value}"
        time.sleep(0.25)
        if (again := read()) != value:
            value, since = again, time.monotonic()
    return value


def test_the_console_in_a_browser(server: Server, browser: Any, shots: Path) -> None:  # noqa: F811
    api = Client(server)
    dataset_id = api.dataset()
    running = api.start(dataset_id, max_steps=100_000)  # never reached: the job runs until it is stopped
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    _sign_in(page, server)
    assert page.title() == "Jobs · tune console"
    assert page.get_by_role("link", name=running).is_visible()
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)

    page.get_by_role("link", name=running).click()
    assert page.title() == f"Job {running} · tune console"
    points = page.locator("#train-points")
    _wait(lambda: int(points.inner_text()) > 0, 240, "the first loss points")
    first = int(points.inner_text())
    try:
        _wait(lambda: int(points.inner_text()) > first, 240, "the curve to gain points while the job runs")
    except AssertionError as exc:  # say what the page and the job were doing
        state = {k: api.status(running).get(k) for k in ("status", "step", "error")}
        raise AssertionError(f"{exc}: {first} points shown, then {points.inner_text()}; job {state}") from exc
    assert api.status(running)["status"] == "running"
    assert page.locator("#chart canvas").count() >= 1  # uPlot drew it
    page.screenshot(path=str(shots / "job-running.png"), full_page=True)

    page.get_by_role("button", name="Stop job").click()
    page.wait_for_url(f"{server.url}/console/jobs/{running}")
    stopping = ("stopping", "stopped")
    state = _wait(lambda: api.status(running)["status"] in stopping and api.status(running), 30, "the stop")
    assert state["stop_reason"] == "stopped by the user from the console"
    shown = page.locator('[data-field="state"]')
    _wait(lambda: shown.inner_text() == "stopped", 120, "the page to say stopped")
    _wait(lambda: page.locator("body[data-live=ended]").count() == 1, 30, "the stream to end")
    cost = _settled(lambda: api.status(running)["cost_usd_micros"])
    page.reload()
    assert int(page.locator("#job-cost").get_attribute("data-usd-micros")) == cost
    assert cost > 0
    page.screenshot(path=str(shots / "job.png"), full_page=True)
    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    mobile = phone.new_page()
    mobile.context.add_cookies(context.cookies())
    mobile.goto(f"{server.url}/console/jobs/{running}")
    assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
    mobile.screenshot(path=str(shots / "job-phone.png"), full_page=True)

    refused = page.request.post(f"{server.url}/console/jobs/{running}/stop", form={"x": "1"})
    assert refused.status == 403  # the session cookie alone is not enough: no CSRF token

    env = {**os.environ, "TUNE_HOME": str(server.home), "TUNE_API_URL": server.url}
    made = subprocess.run(
        [sys.executable, "-c", "from cli.tune import main; main()", "admin", "user", "create",
         "--email", "eve@example.com", "--password", "pw-eve-browser", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    other = browser.new_context(viewport=LAPTOP).new_page()
    other.goto(f"{server.url}/console/sign-in")
    other.get_by_label("Email").fill("eve@example.com")
    other.get_by_label("Password").fill("pw-eve-browser")
    other.get_by_role("button", name="Sign in").click()
    other.wait_for_url(f"{server.url}/console/jobs")
    reply = other.goto(f"{server.url}/console/jobs/{running}")
    assert reply is not None and reply.status == 404
    assert other.title() == "Not found · tune console"
    other.screenshot(path=str(shots / "not-found.png"), full_page=True)
    assert {"jobs.png", "job-running.png", "job.png", "job-phone.png", "not-found.png"} <= {
        p.name for p in shots.iterdir()
    }


BAD_LINES = CHAT % (0, 0) + '{"messages": "not a list"}\n' + CHAT % (1, 1) + "not json\n"


def _upload(page: Any, srv: Server, path: Path) -> str:
    """Upload ``path`` through the datasets page's form (the keyboard's way: Enter on the button)."""
    page.goto(f"{srv.url}/console/datasets")
    page.get_by_label("JSONL file").set_input_files(str(path))
    page.get_by_role("button", name="Upload").press("Enter")
    page.wait_for_url(f"{srv.url}/console/datasets/ds*", timeout=60_000)
    return page.url.rsplit("/", 1)[1]


def _usage_micros(api: Client) -> int:
    return api.http.get("/billing/usage").json()["current_period"]["total_cost_usd_micros"]  # type: ignore[no-any-return]


def test_datasets_billing_models_and_operators_in_a_browser(
    server: Server,  # noqa: F811
    browser: Any,
    shots: Path,
    tmp_path: Path,
) -> None:
    api = Client(server)
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    _sign_in(page, server)

    good, bad = tmp_path / "train.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(CHAT % (i, i) for i in range(24)))
    bad.write_text(BAD_LINES * 3)
    dataset_id = _upload(page, server, good)
    assert page.title() == "Dataset train.jsonl · tune console"
    assert "Every line is valid: 24 rows" in page.locator("#report-summary").inner_text()
    assert api.http.get(f"/datasets/{dataset_id}").json()["status"] == "validated"
    _upload(page, server, bad)
    assert page.title() == "Dataset bad.jsonl · tune console"
    assert page.locator("#report-summary").inner_text().startswith("Rejected: 6 failing lines")
    lines = page.locator("#failing-lines tbody th").all_inner_texts()
    assert lines == ["2", "4", "6", "8", "10", "12"], lines
    page.screenshot(path=str(shots / "dataset-rejected.png"), full_page=True)
    page.goto(f"{server.url}/console/datasets")
    page.screenshot(path=str(shots / "datasets.png"), full_page=True)

    if _usage_micros(api) == 0:  # run alone: bill a short job first
        job = api.start(dataset_id, max_steps=4, checkpoint_every_steps=4)
        _wait(lambda: api.status(job)["status"] in ("succeeded", "failed", "stopped"), 300, "the job to end")
    before = _settled(lambda: _usage_micros(api))
    page.goto(f"{server.url}/console/billing")
    assert page.title() == "Billing · tune console"
    shown = int(page.locator("#month-cost").get_attribute("data-usd-micros"))
    assert shown == before == _usage_micros(api) and shown > 0
    assert page.locator("#months-chart canvas").count() >= 1 or page.locator("#months tbody td").count() >= 1
    page.screenshot(path=str(shots / "billing.png"), full_page=True)
    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    mobile = phone.new_page()
    mobile.context.add_cookies(context.cookies())
    for path in ("/console/billing", "/console/datasets", "/console/models/chat", "/console/operators"):
        mobile.goto(f"{server.url}{path}")
        assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    mobile.goto(f"{server.url}/console/billing")
    mobile.screenshot(path=str(shots / "billing-phone.png"), full_page=True)

    page.goto(f"{server.url}/console/models")
    assert page.title() == "Models · tune console"
    page.screenshot(path=str(shots / "models.png"), full_page=True)
    page.get_by_role("link", name="Open the chat playground").click()
    assert page.title() == "Chat playground · tune console"
    page.get_by_label("Model", exact=True).select_option("tiny-llama")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max answer tokens").fill("8")
    page.get_by_label("Message").fill("Say hello.")
    page.get_by_role("button", name="Send").click()  # streamed (chat.js): the answer is written as it comes
    answer = page.locator(".turn-assistant .said")
    usage = page.locator("#chat-usage")
    _wait(lambda: usage.count() == 1, 240, "the model's whole answer")
    assert answer.count() == 1 and answer.inner_text().strip() != ""
    assert page.locator(".turn-user .said").inner_text() == "Say hello."
    assert "answer tokens" in usage.inner_text() and page.locator("#chat-error").is_hidden()
    first = answer.inner_text()
    page.get_by_label("Message").fill("Again.")  # the next turn carries the first (the form's history)
    page.get_by_role("button", name="Send").click()
    _wait(lambda: answer.count() == 2 and page.get_by_role("button", name="Send").is_enabled(), 240,
          "the second answer")
    assert answer.first.inner_text() == first and page.locator("#chat-error").is_hidden()
    history = json.loads(page.locator("input[name=history]").input_value())
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"].split() == first.split()  # the pieces streamed make the answer recorded
    page.screenshot(path=str(shots / "chat.png"), full_page=True)

    page.goto(f"{server.url}/console/operators")
    assert page.title() == "Operators · tune console"
    page.get_by_label("Email", exact=True).fill("mallory@example.com")
    page.get_by_label("Password (at least 8 characters)").fill("pw-mallory-browser")
    page.get_by_role("button", name="Create user").click()
    row = page.locator("tr", has_text="mallory@example.com")
    _wait(lambda: row.count() == 1, 30, "the new user's row")
    mallory = {"email": "mallory@example.com", "password": "pw-mallory-browser"}
    assert httpx.post(f"{server.url}/auth/login", json=mallory).status_code == 200
    row.get_by_label("Reason to suspend mallory@example.com").fill("abuse")
    row.get_by_role("button", name="Suspend mallory@example.com").click()
    _wait(lambda: row.locator(".state-suspended").count() == 1, 30, "the suspension")
    refused = httpx.post(f"{server.url}/auth/login", json=mallory)
    assert refused.status_code in (401, 403), refused.text
    page.get_by_role("button", name="Run the audit").click()
    _wait(lambda: page.locator("#audit-result").count() == 1, 120, "the audit")
    page.screenshot(path=str(shots / "operators.png"), full_page=True)
    assert {"datasets.png", "dataset-rejected.png", "billing.png", "billing-phone.png", "models.png",
            "chat.png", "operators.png"} <= {p.name for p in shots.iterdir()}  # fmt: skip
