"""``tune`` job and billing commands: what they send, what they print, how they exit."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cli.config import credentials_path, load_credentials
from tests.cli.fake_api import FakeApi, Reply

JOBS = {
    "jobs": [
        {
            "job_id": "job_a",
            "status": "running",
            "base_model": "smollm2-135m",
            "dataset_id": "ds_1",
            "gpu_type": "A100",
            "created_at": "2026-03-14T10:00:00Z",
        },
        {
            "job_id": "job_b",
            "status": "queued",
            "base_model": "smollm2-135m",
            "dataset_id": "ds_2",
            "gpu_type": "H100",
            "created_at": "2026-03-14T11:00:00Z",
        },
    ]
}


def test_login_stores_token_privately_and_sends_it(logged_in: FakeApi, run_cli) -> None:
    creds = load_credentials(logged_in.url)
    assert (creds.token, creds.user_id, creds.email) == ("tok-123", "u_1", "ann@example.com")
    assert stat.S_IMODE(credentials_path().stat().st_mode) == 0o600
    logged_in.route("GET", "/fine-tune/u_1/list", Reply.json(JOBS))
    assert run_cli("tune", "list").code == 0
    assert logged_in.last("GET", "/fine-tune/u_1/list").headers["authorization"] == "Bearer tok-123"


def test_login_reads_password_from_env(fake_api: FakeApi, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("TUNE_PASSWORD", "pw")
    result = run_cli("tune", "login", "--email", "ann@example.com")
    assert result.code == 0, result.err
    assert "u_1" in result.out
    assert "pw" not in result.out


def test_logout_forgets_the_token(logged_in: FakeApi, run_cli) -> None:
    assert run_cli("tune", "logout").code == 0
    assert load_credentials(logged_in.url) is None
    assert "tune login" in run_cli("tune", "list").err


def test_api_url_option_beats_env(logged_in: FakeApi, run_cli, monkeypatch) -> None:
    url = logged_in.url
    monkeypatch.setenv("TUNE_API_URL", "http://127.0.0.1:1")
    logged_in.route("GET", "/fine-tune/u_1/list", Reply.json(JOBS))
    assert run_cli("tune", "list", "--api-url", url, "--json").code == 0
    assert run_cli("tune", "--api-url", url, "list").code == 0


def test_list_json_is_the_api_data(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/u_1/list", Reply.json(JOBS))
    result = run_cli("tune", "list", "--json", "--state", "running")
    assert result.code == 0
    rows = json.loads(result.out)
    assert [{k: row[k] for k in sent} for row, sent in zip(rows, JOBS["jobs"], strict=True)] == JOBS["jobs"]
    assert logged_in.last("GET", "/fine-tune/u_1/list").query == {"state": "running", "limit": "20"}


def test_list_table(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/u_1/list", Reply.json(JOBS))
    lines = run_cli("tune", "list").out.splitlines()
    assert any("job_a" in ln and "running" in ln and "A100" in ln for ln in lines)
    assert any("job_b" in ln and "queued" in ln and "H100" in ln for ln in lines)


def test_start_sends_config_and_reports_job(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    (cli_env / "config.yml").write_text("method: lora\nepochs: 2\nlora:\n  r: 8\n")
    logged_in.route(
        "POST",
        "/fine-tune/u_1/start",
        Reply.json({"job_id": "job_new", "status": "queued", "estimate_usd_micros": 120_000}),
    )
    result = run_cli(
        "tune", "start", "--model", "smollm2-135m", "--config", "config.yml", "--dataset", "ds_1"
    )
    assert result.code == 0, result.err
    assert logged_in.last("POST", "/fine-tune/u_1/start").json() == {
        "base_model": "smollm2-135m",
        "dataset_id": "ds_1",
        "config": {"method": "lora", "epochs": 2, "lora": {"r": 8}},
        "dry_run": False,
        "force": False,
        "start_from": None,
    }
    assert "job_new" in result.out and "$0.12" in result.out


def test_start_from_a_checkpoint_sends_it_and_says_so(logged_in: FakeApi, run_cli) -> None:
    point = {
        "kind": "checkpoint",
        "id": "job_old:40",
        "path": "users/u_1/jobs/job_old/attempts/1/checkpoints/40/",
    }
    logged_in.route(
        "POST",
        "/fine-tune/u_1/start",
        Reply.json({"job_id": "job_new", "status": "submitted", "start_from": point}),
    )
    result = run_cli("tune", "start", "--model", "m", "--dataset", "ds_1", "--from", "job_old:40")
    assert result.code == 0, result.err
    assert logged_in.last("POST", "/fine-tune/u_1/start").json()["start_from"] == "job_old:40"
    assert "starting from checkpoint job_old:40" in result.out and "started job_new" in result.out


def test_start_dry_run_shows_estimate(logged_in: FakeApi, run_cli) -> None:
    logged_in.route(
        "POST",
        "/fine-tune/u_1/start",
        Reply.json({"estimate_usd_micros": 2_345_678, "max_cost_usd_micros": 5_000_000}),
    )
    result = run_cli("tune", "start", "--model", "m", "--dataset", "ds_1", "--dry-run", "--force")
    assert result.code == 0, result.err
    body = logged_in.last("POST", "/fine-tune/u_1/start").json()
    assert body["dry_run"] is True and body["force"] is True
    assert "estimated cost $2.345678" in result.out and "limit $5.00" in result.out
    assert "nothing started" in result.out


def test_start_dry_run_shows_the_estimate_range_and_its_source(logged_in: FakeApi, run_cli) -> None:
    estimate = {
        "estimate_usd_micros": 1_678,
        "estimate_low_usd_micros": 1_342,
        "estimate_high_usd_micros": 2_098,
        "estimate_source": "measured",
        "estimate_basis": "measured from 1 job",
        "estimate_steps": 42,
    }
    logged_in.route("POST", "/fine-tune/u_1/start", Reply.json(estimate))
    result = run_cli("tune", "start", "--model", "m", "--dataset", "ds_1", "--dry-run")
    assert result.code == 0, result.err
    shown = "estimated cost $0.001678 (range $0.001342 to $0.002098, measured from 1 job; 42 steps)"
    assert shown in result.out


def test_start_rejects_bad_yaml_before_calling(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    (cli_env / "bad.yml").write_text("epochs: 2\nlora: [1, 2\n")
    result = run_cli("tune", "start", "--model", "m", "--dataset", "d", "--config", "bad.yml")
    assert result.code == 1
    assert "not valid YAML" in result.err and "bad.yml:" in result.err
    result = run_cli("tune", "start", "--model", "m", "--dataset", "d", "--config", "missing.yml")
    assert result.code == 1 and "missing.yml" in result.err
    assert not [r for r in logged_in.requests if r.path.endswith("/start")]


def test_status_follow_exits_by_outcome(logged_in: FakeApi, run_cli) -> None:
    for outcome, code in (("succeeded", 0), ("failed", 1)):
        states = iter(
            [
                {"status": "running", "step": 1, "total_steps": 2, "loss": 2.5},
                {"status": "running", "step": 2, "total_steps": 2, "loss": 1.25},
                {"status": outcome, "step": 2, "total_steps": 2},
            ]
        )
        logged_in.route("GET", "/fine-tune/job_a/status", lambda _r, s=states: Reply.json(next(s)))
        result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0")
        assert result.code == code, result.err
        lines = result.out.strip().splitlines()
        assert len(lines) == 3
        assert "step 1/2" in lines[0] and "loss 2.5" in lines[0]
        assert outcome in lines[-1]


def test_status_once(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/job_a/status", Reply.json({"status": "running", "cost_usd_micros": 7}))
    result = run_cli("tune", "status", "--job-id", "job_a")
    assert result.code == 0 and "running" in result.out and "$0.000007" in result.out
    assert json.loads(run_cli("tune", "status", "--job-id", "job_a", "--json").out)["cost_usd_micros"] == 7


def test_logs_streams_text(logged_in: FakeApi, run_cli) -> None:
    logged_in.route(
        "GET",
        "/fine-tune/job_a/logs",
        lambda _r: Reply(200, iter([b"line 1\n", b"line 2\n"]), {"Content-Type": "text/plain"}),
    )
    result = run_cli("tune", "logs", "--job-id", "job_a", "--follow", "--tail", "50")
    assert result.out == "line 1\nline 2\n"
    assert logged_in.last("GET", "/fine-tune/job_a/logs").query == {"tail": "50", "follow": "true"}


def test_stop(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("POST", "/fine-tune/job_a/stop", Reply.json({"job_id": "job_a", "status": "stopping"}))
    result = run_cli("tune", "stop", "--job-id", "job_a")
    assert result.code == 0 and "stopping" in result.out


def test_pause_and_resume_take_the_job_id_as_an_argument(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("POST", "/fine-tune/job_a/pause", Reply.json({"job_id": "job_a", "status": "pausing"}))
    logged_in.route("POST", "/fine-tune/job_a/resume", Reply.json({"job_id": "job_a", "status": "queued"}))
    result = run_cli("tune", "pause", "job_a")
    assert result.code == 0 and "pause requested for job_a (pausing)" in result.out
    result = run_cli("tune", "resume", "--job-id", "job_a")
    assert result.code == 0 and "job_a resumed (queued)" in result.out
    assert logged_in.last("POST", "/fine-tune/job_a/resume") is not None


def test_cost(logged_in: FakeApi, run_cli) -> None:
    reply = {
        "job_id": "job_a",
        "status": "running",
        "cost": "3.25",
        "cost_usd_micros": 3_250_000,
        "gpu_metrics": {"gpu_type": "A100", "gpu_count": 2, "gpu_ms": 3_600_000},
    }
    logged_in.route("GET", "/billing/job/job_a/cost", Reply.json(reply))
    out = run_cli("tune", "cost", "--job-id", "job_a").out
    assert "$3.25" in out and "1h00m00s" in out and "2x A100" in out
    data = json.loads(run_cli("tune", "cost", "--job-id", "job_a", "--json").out)
    assert (data["cost"], data["cost_usd_micros"]) == ("3.25", 3_250_000)  # exact, both forms


USAGE = {
    "current_period": {
        "period": "2026-03",
        "start_date": "2026-03-01",
        "total_cost": "12.5",
        "total_cost_usd_micros": 12_500_000,
        "usage_breakdown": {
            "A100": {
                "gpu_ms": 4_500_000,
                "cost_per_hour_usd_micros": 10_000_000,
                "total_cost_usd_micros": 12_500_000,
            }
        },
        "jobs": [
            {"job_id": "job_a", "gpu_type": "A100", "gpu_seconds": "4500", "cost_usd_micros": 12_500_000}
        ],
    },
    "budget": {"monthly_limit_usd_micros": 100_000_000, "thresholds_pct": [50, 80, 100]},
    "remaining_usd_micros": 87_500_000,
}


def test_billing_usage_and_history(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/billing/usage", Reply.json(USAGE))
    out = run_cli("tune", "billing").out
    assert "2026-03" in out and "$12.50" in out and "1h15m00s" in out and "$10.00" in out
    assert "job_a" in out and "$100.00" in out and "$87.50" in out and "50%, 80%, 100%" in out
    assert json.loads(run_cli("tune", "billing", "--json").out)["remaining_usd_micros"] == 87_500_000
    history = {
        "periods": [{"period": "2026-02", "total_cost_usd_micros": 4_000_000, "jobs": [{"job_id": "j"}]}]
    }
    logged_in.route("GET", "/billing/history", Reply.json(history))
    lines = run_cli("tune", "billing", "--history").out.splitlines()
    assert any("2026-02" in ln and "$4.00" in ln for ln in lines)
    assert (
        json.loads(run_cli("tune", "billing", "--history", "--json").out)["periods"][0]["period"] == "2026-02"
    )


def test_pricing_and_budget_show(logged_in: FakeApi, run_cli) -> None:
    prices = {"prices": {"A100": {"usd_micros_per_hour": 2_500_000, "effective_at": "2026-01-01T00:00:00Z"}}}
    logged_in.route("GET", "/billing/pricing", Reply.json(prices))
    lines = run_cli("tune", "billing", "pricing").out.splitlines()
    assert any("A100" in ln and "$2.50" in ln for ln in lines)
    logged_in.route("GET", "/billing/usage", Reply.json(USAGE))
    out = run_cli("tune", "budget", "show").out
    assert "$100.00" in out and "$12.50" in out and "$87.50" in out


def test_budget_set_sends_exact_micros(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("PUT", "/billing/budget", lambda r: Reply.json(r.json()))
    result = run_cli("tune", "budget", "set", "--monthly", "100")
    assert result.code == 0, result.err
    assert logged_in.last("PUT", "/billing/budget").json() == {
        "monthly_limit_usd_micros": 100_000_000,
        "thresholds_pct": [50, 80, 100],
    }
    run_cli("tune", "budget", "set", "--monthly", "0.000001", "--thresholds", "90", "75")
    assert logged_in.last("PUT", "/billing/budget").json() == {
        "monthly_limit_usd_micros": 1,
        "thresholds_pct": [75, 90],
    }
    for bad in ("abc", "-5", "0.0000001"):
        result = run_cli("tune", "budget", "set", "--monthly", bad)
        assert result.code == 1 and "--monthly" in result.err, bad


def test_billing_report_formats(logged_in: FakeApi, run_cli) -> None:
    row = {
        "job_id": "job_a",
        "gpu_type": "A100",
        "gpu_count": 2,
        "seconds": "0.5",
        "cost_per_hour": "4",
        "cost": "4",
        "gpu_ms": 500,
        "usd_micros_per_hour": 4_000_000,
        "cost_usd_micros": 4_000_000,
    }
    report = {
        "month": "2026-03",
        "start_date": "2026-03-01",
        "rows": [row],
        "total_cost": "4",
        "total_cost_usd_micros": 4_000_000,
    }
    logged_in.route("GET", "/billing/report", Reply.json(report))
    args = ("tune", "billing", "report", "--month", "2026-03")
    rows = list(csv.DictReader(io.StringIO(run_cli(*args, "--format", "csv").out)))
    assert rows == [{k: str(v) for k, v in row.items()}]
    assert logged_in.last("GET", "/billing/report").query == {"month": "2026-03"}
    assert json.loads(run_cli(*args, "--format", "json").out) == report
    table = run_cli(*args).out
    assert "$4.00" in table and "job_a" in table
    bad = run_cli("tune", "billing", "report", "--month", "2026-13")
    assert bad.code == 1 and "--month" in bad.err
    assert run_cli(*args, "--format", "xml").code == 2


def test_billing_report_takes_json_like_every_listing(logged_in: FakeApi, run_cli) -> None:
    report = {"month": "2026-03", "start_date": "2026-03-01", "rows": []}
    report |= {"total_cost": "0", "total_cost_usd_micros": 0}
    logged_in.route("GET", "/billing/report", Reply.json(report))
    args = ("tune", "billing", "report", "--month", "2026-03")
    result = run_cli(*args, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == report
    assert run_cli(*args, "--json", "--format", "json").code == 0
    both = run_cli(*args, "--json", "--format", "csv")
    assert both.code == 1 and "--json" in both.err and "csv" in both.err


def _paged_jobs(total: int) -> Any:
    """A list route that pages ``total`` jobs newest first, the cursor being the next index."""
    jobs = [
        {"job_id": f"job_{i:03d}", "status": "queued", "created_at": "2026-03-14T10:00:00Z"}
        for i in range(total)
    ]
    jobs.reverse()

    def handler(req: Any) -> Reply:
        start, limit = int(req.query.get("after", 0)), int(req.query["limit"])
        more = start + limit < total
        return Reply.json(
            {
                "jobs": jobs[start : start + limit],
                "has_more": more,
                "next": str(start + limit) if more else None,
            }
        )

    return handler


def test_list_all_pages_through_every_job(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/u_1/list", _paged_jobs(250))
    result = run_cli("tune", "list", "--all", "--json")
    assert result.code == 0, result.err
    assert [r["job_id"] for r in json.loads(result.out)] == [f"job_{i:03d}" for i in range(249, -1, -1)]
    asked = [r.query for r in logged_in.requests if r.path == "/fine-tune/u_1/list"]
    assert asked == [{"limit": "100"}, {"limit": "100", "after": "100"}, {"limit": "100", "after": "200"}]


def test_list_limit_shows_one_page_and_says_how_to_get_more(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/u_1/list", _paged_jobs(30))
    result = run_cli("tune", "list", "--limit", "5", "--json")
    assert result.code == 0 and len(json.loads(result.out)) == 5
    assert "more jobs: --all for every one, or --after 5" in result.err
    assert run_cli("tune", "list", "--after", "25", "--json").code == 0
    assert logged_in.last("GET", "/fine-tune/u_1/list").query == {"limit": "20", "after": "25"}


@pytest.mark.parametrize(("command", "path", "field"), [
    (("tune", "list"), "/fine-tune/u_1/list", "jobs"),
    (("dataset", "list"), "/datasets/u_1/list", "datasets"),
    (("model", "list"), "/models/u_1/list", "models"),
])  # fmt: skip
def test_an_empty_list_says_so(logged_in: FakeApi, run_cli, command: tuple[str, ...], path: str,
                               field: str) -> None:
    logged_in.route("GET", path, lambda req: Reply.json({field: [], "has_more": False, "next": None}))
    result = run_cli(*command)
    assert result.code == 0 and f"no {field}" in result.out and result.err == ""
    assert json.loads(run_cli(*command, "--json").out) == []


CHECKPOINTS = {
    "job_id": "job_a",
    "checkpoints": [
        {"checkpoint_id": "job_a:10", "attempt": 1, "step": 10, "train_loss": 2.5, "eval_loss": 2.75},
        {"checkpoint_id": "job_a:20", "attempt": 2, "step": 20, "train_loss": 1.25, "available": True},
    ],
}


def test_checkpoints_takes_the_job_as_argument_and_shows_step_and_losses(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/job_a/checkpoints", Reply.json(CHECKPOINTS))
    result = run_cli("tune", "checkpoints", "job_a")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any("job_a:10" in ln and "2.5" in ln and "2.75" in ln for ln in lines)
    assert any("job_a:20" in ln and "1.25" in ln for ln in lines)
    rows = json.loads(run_cli("tune", "checkpoints", "--job-id", "job_a", "--json").out)
    assert [row["step"] for row in rows] == [10, 20]


def _paged_months(total: int) -> Any:
    """``/billing/history`` paging ``total`` closed months newest first, the cursor the next index."""
    months = [f"{2020 + i // 12}-{1 + i % 12:02d}" for i in range(total)][::-1]

    def handler(req: Any) -> Reply:
        start, limit = int(req.query.get("after", 0)), int(req.query["limit"])
        more = start + limit < total
        periods = [{"period": m, "total_cost_usd_micros": 1_000_000, "jobs": []} for m in months[start:]]
        return Reply.json(
            {"periods": periods[:limit], "has_more": more, "next": str(start + limit) if more else None}
        )

    return handler


def test_billing_history_pages_like_the_list(logged_in: FakeApi, run_cli) -> None:
    """Issue 18, part 7: ``tune billing history`` asks for a page (``--limit``, ``--after``) or pages
    through every month (``--all``); ``tune billing --history`` still shows every month."""
    logged_in.route("GET", "/billing/history", _paged_months(150))
    page = run_cli("tune", "billing", "history", "--json")
    assert page.code == 0, page.err
    assert [p["period"] for p in json.loads(page.out)] == [
        "2032-06",
        *[f"2032-{m:02d}" for m in range(5, 0, -1)],
        *[f"2031-{m:02d}" for m in range(12, 6, -1)],
    ]
    assert "more months: --all for every one, or --after 12" in page.err
    assert logged_in.last("GET", "/billing/history").query == {"limit": "12"}
    table = run_cli("tune", "billing", "history", "--limit", "2", "--after", "10")
    assert logged_in.last("GET", "/billing/history").query == {"limit": "2", "after": "10"}
    assert "2031-08" in table.out and "$1.00" in table.out and "2031-07" in table.out
    every = run_cli("tune", "billing", "history", "--all", "--json")
    assert len(json.loads(every.out)) == 150 and every.err == ""
    asked = [r.query for r in logged_in.requests if r.path == "/billing/history"][-2:]
    assert asked == [{"limit": "100"}, {"limit": "100", "after": "100"}]
    whole = json.loads(run_cli("tune", "billing", "--history", "--json").out)
    assert len(whole["periods"]) == 150 and whole["periods"][0]["period"] == "2032-06"


def test_billing_report_table_shows_credits_and_serving(logged_in: FakeApi, run_cli) -> None:
    """A month with credits shows the credited GPU time per row; one with chat completions, their table."""
    row = {"job_id": "job_a", "gpu_type": "A100", "gpu_count": 1, "gpu_ms": 500, "usd_micros_per_hour": 4}
    row |= {"cost_usd_micros": 1, "charged_usd_micros": 2, "credited_gpu_ms": 250, "credited_usd_micros": 1}
    served = {"model": "mdl_chat", "base_model": "tiny-llama", "requests": 3, "cost_usd_micros": 7}
    report = {"month": "2026-03", "start_date": "2026-03-01", "rows": [row], "serving": [served]}
    report |= {"total_cost": "0", "total_cost_usd_micros": 8}
    report |= {"charged_usd_micros": 9, "credited_usd_micros": 1}
    logged_in.route("GET", "/billing/report", Reply.json(report))
    table = run_cli("tune", "billing", "report", "--month", "2026-03")
    assert table.code == 0, table.err
    assert "credited gpu" in table.out.lower()
    assert "serving (chat completions)" in table.out and "mdl_chat" in table.out
