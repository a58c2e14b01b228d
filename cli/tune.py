"""``tune``: log in, start and watch fine-tuning jobs, costs and billing; run the server.

Commands: login, logout, start, list, status, stop, logs, events, cost, billing
(usage, history, pricing, report), budget (set), serve, admin (operator tools).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from cli.context import Ctx, JsonFlag, build_app, main_for
from cli.errors import CliError

__all__ = ["app", "main"]

app = build_app("tune", "Fine-tune LLMs on your data; follow jobs, logs and costs.")
app.command("cli.billing:billing_app", name="billing", help="Current usage, history, pricing and reports.")
app.command("cli.billing:budget_app", name="budget", help="Set the monthly budget and its alerts.")
app.command("cli.billing:cost", name="cost", help="What one job has cost so far.")
app.command(
    "cli.serve:serve", name="serve", help="Run the API with the projector and workers (local bucket)."
)
app.command(
    "cli.admin:admin_app", name="admin", help="Operator tools on the bucket: users, prices, rebuild, audit."
)

TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped"})
_JOB_COLUMNS = (
    "job_id",
    "state",
    "status",
    "base_model",
    "dataset_id",
    "model_id",
    "step",
    "total_steps",
    "cost_usd_micros",
    "created_at",
    "updated_at",
)


def _job_state(job: dict[str, Any]) -> str:
    return str(job.get("state") or job.get("status") or "?")


@app.command
def login(
    *,
    email: str | None = None,
    password: Annotated[
        str | None, Parameter(env_var="TUNE_PASSWORD", help="Prompted for when not given.")
    ] = None,
    ctx: Ctx,
) -> None:
    """Log in and store the token in the user's config folder (mode 0600)."""
    from getpass import getpass

    from cli.config import Credentials, save_credentials

    try:
        email = email or input("email: ").strip()
        if not password:
            password = getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    except EOFError as exc:
        raise CliError("no email or password given (stdin closed)") from exc
    with ctx.anonymous_client() as client:
        reply = client.post("/auth/login", {"email": email, "password": password})
    creds = Credentials(
        token=reply["token"], user_id=reply["user_id"], email=email, expires_at=reply.get("expires_at")
    )
    path = save_credentials(ctx.api_url, creds)
    print(f"logged in to {ctx.api_url} as {email} (user {creds.user_id}); token saved in {path}")


@app.command
def logout(*, ctx: Ctx) -> None:
    """Forget the stored token for this server."""
    from cli.config import clear_credentials

    print("logged out" if clear_credentials(ctx.api_url) else f"not logged in to {ctx.api_url}")


def _read_config(path: Path) -> dict[str, Any]:
    """The training config file as a mapping; CliError with the line of a YAML mistake."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read config {path}: {exc.strerror or exc}", where=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise CliError(
            f"config is not valid YAML: {getattr(exc, 'problem', None) or exc}", where=where
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError("config must be a mapping of keys to values", where=str(path))
    return data


@app.command
def start(
    *,
    model: Annotated[str, Parameter(help="Base model name, e.g. smollm2-135m.")],
    dataset: Annotated[str, Parameter(help="Dataset id (see `dataset list`).")],
    config: Annotated[Path | None, Parameter(help="Training config (YAML).")] = None,
    dry_run: Annotated[
        bool, Parameter(help="Check the config and show the cost estimate; start nothing.")
    ] = False,
    force: Annotated[bool, Parameter(help="Start even if the estimate exceeds the budget.")] = False,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Start a fine-tuning job (--dry-run: only validate and estimate its cost)."""
    from cli.output import print_json, usd

    body = {
        "base_model": model,
        "dataset_id": dataset,
        "config": _read_config(config) if config else {},
        "dry_run": dry_run,
        "force": force,
    }
    reply = ctx.client.post(f"/fine-tune/{ctx.user_id}/start", body)
    if json:
        print_json(reply)
        return
    estimate = reply.get("estimate_usd_micros")
    limit = reply.get("max_cost_usd_micros")
    cost = f"estimated cost {usd(estimate)}" + (f" (limit {usd(limit)})" if limit else "")
    if dry_run:
        print(f"dry run: config valid; {cost}; nothing started")
        for warning in reply.get("warnings") or []:
            print(f"warning: {warning}")
        return
    job_id = reply.get("job_id")
    print(f"started {job_id} ({_job_state(reply)}); {cost}")
    print(f"follow it with: tune status --job-id {job_id} --follow")


@app.command(name="list")
def list_jobs(
    *,
    state: Annotated[str | None, Parameter(help="Only jobs in this state, e.g. running.")] = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """List your fine-tuning jobs."""
    from cli.output import Column, print_json, print_table, rows_of

    params = {"state": state} if state else None
    jobs = rows_of(ctx.client.get(f"/fine-tune/{ctx.user_id}/list", params=params), "jobs")
    if json:
        print_json(jobs)
    else:
        print_table(jobs, [Column(k) for k in _JOB_COLUMNS], empty="no jobs")


def _progress_line(job: dict[str, Any]) -> str:
    from cli.output import format_value

    parts = [_job_state(job)]
    if job.get("step") is not None:
        total = job.get("total_steps")
        parts.append(f"step {job['step']}" + (f"/{total}" if total else ""))
    for key in ("epoch", "loss", "tokens", "gpu_ms", "cost_usd_micros"):
        if job.get(key) is not None:
            parts.append(
                f"{key.removesuffix('_usd_micros').removesuffix('_ms')} {format_value(key, job[key])}"
            )
    if job.get("error"):
        parts.append(f"error: {job['error']}")
    return "  ".join(parts)


@app.command
def status(
    *,
    job_id: str,
    follow: Annotated[bool, Parameter(help="Print each change until the job ends.")] = False,
    interval: Annotated[float, Parameter(help="Seconds between polls with --follow.")] = 2.0,
    json: JsonFlag = False,
    ctx: Ctx,
) -> int:
    """Show a job's status; with --follow exit 0 only if it succeeds."""
    import json as jsonlib

    from cli.output import print_json, print_record

    path = f"/fine-tune/{job_id}/status"
    job = ctx.client.get(path)
    if not follow:
        print_json(job) if json else print_record(job, title=job_id)
        return 0
    last = None
    while True:
        line = _progress_line(job)
        if json and job != last:
            print(jsonlib.dumps(job), flush=True)
        elif line != last:
            print(f"{time.strftime('%H:%M:%S')} {job_id} {line}", flush=True)
        last = job if json else line
        if _job_state(job) in TERMINAL_STATES:
            return 0 if _job_state(job) == "succeeded" else 1
        time.sleep(interval)
        job = ctx.client.get(path)


@app.command
def stop(*, job_id: str, ctx: Ctx) -> None:
    """Ask a job to stop (it saves a checkpoint first)."""
    reply = ctx.client.post(f"/fine-tune/{job_id}/stop") or {}
    print(f"stop requested for {job_id} ({_job_state(reply) if reply else 'stopping'})")


@app.command
def logs(
    *,
    job_id: str,
    follow: Annotated[bool, Parameter(help="Keep printing new lines until the job ends.")] = False,
    tail: Annotated[int | None, Parameter(help="Only the last N lines.")] = None,
    ctx: Ctx,
) -> None:
    """Print a job's training log."""
    params: dict[str, Any] = {}
    if tail is not None:
        params["tail"] = tail
    if follow:
        params["follow"] = "true"
    for text in ctx.client.stream_text(f"/fine-tune/{job_id}/logs", params=params or None):
        sys.stdout.write(text)
        sys.stdout.flush()


@app.command
def events(*, job_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """List a job's events (the audit trail behind its status and cost)."""
    from cli.output import Column, print_json, print_table, rows_of

    rows = rows_of(ctx.client.get(f"/fine-tune/{job_id}/events"), "events")
    if json:
        print_json(rows)
    else:
        cols = ("seq", "position", "at", "type", "topic", "summary", "data")
        print_table(rows, [Column(k) for k in cols], empty="no events")


def main(tokens: list[str] | None = None) -> None:
    """Console script ``tune``."""
    main_for(app, "tune", tokens)
