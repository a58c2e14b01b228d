"""``tune``: log in, start and watch fine-tuning jobs, costs and billing; run the server.

Commands: login, logout, start, list, status, stop, logs, events, checkpoints, cost, billing
(usage, history, pricing, report), budget (set), key (create, list, revoke), serve, admin
(operator tools).
Request and reply shapes are ``api.schemas`` Structs, imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from cli.context import Ctx, JsonFlag, build_app, console_script
from cli.errors import CliError
from cli.pages import AfterFlag, AllFlag, LimitFlag

__all__ = ["app", "main"]

app = build_app("tune", "Fine-tune LLMs on your data; follow jobs, logs and costs.")
app.command("cli.billing:billing_app", name="billing", help="Current usage, history, pricing and reports.")
app.command("cli.billing:budget_app", name="budget", help="Set the monthly budget and its alerts.")
app.command("cli.billing:cost", name="cost", help="What one job has cost so far.")
app.command("cli.keys:key_app", name="key", help="API keys for programs: create, list, revoke.")
app.command(
    "cli.serve:serve",
    name="serve",
    help="Run the API with the projector and workers, where --api-url / TUNE_API_URL points.",
)
app.command("cli.run:run_app", name="run", help="Run one role alone: api, projector, ledger, dispatcher.")
app.command(
    "cli.admin:admin_app", name="admin", help="Operator tools on the bucket: users, prices, rebuild, audit."
)

_JOB_COLUMNS = ("job_id", "status", "base_model", "dataset_id", "model_id", "gpu_type", "created_at")


@app.command
def login(
    *,
    email: str | None = None,
    password: Annotated[
        str | None, Parameter(env_var="TUNE_PASSWORD", help="Prompted for if not given.")
    ] = None,
    ctx: Ctx,
) -> None:
    """Log in and store the token in the user's config folder (mode 0600)."""
    from getpass import getpass

    from api.schemas import LoginRequest, LoginResponse
    from cli.config import Credentials, save_credentials

    try:
        email = email or input("email: ").strip()
        if not password:
            password = getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    except EOFError as exc:
        raise CliError("no email or password given (stdin closed)") from exc
    with ctx.anonymous_client() as client:
        reply = client.post("/auth/login", LoginRequest(email=email, password=password), type=LoginResponse)
    creds = Credentials(
        token=reply.token, user_id=reply.user_id, email=reply.email, expires_at=reply.expires_at
    )
    path = save_credentials(ctx.api_url, creds)
    print(f"logged in to {ctx.api_url} as {reply.email} (user {reply.user_id}); token saved in {path}")


@app.command
def logout(*, ctx: Ctx) -> None:
    """Forget the stored token for this server."""
    from cli.config import clear_credentials

    print("logged out" if clear_credentials(ctx.api_url) else f"not logged in to {ctx.api_url}")


def _read_config(path: Path) -> dict[str, Any]:
    """The training config file as a mapping; CliError with the line of a YAML mistake."""
    from domain.config_yaml import config_from_yaml
    from domain.errors import ValidationFailed

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read config {path}: {exc.strerror or exc}", where=str(path)) from exc
    try:
        return config_from_yaml(text, where=str(path), at_line=lambda line: f"{path}:{line}")
    except ValidationFailed as exc:
        raise CliError(exc.message, where=exc.where) from exc


@app.command
def start(
    *,
    model: Annotated[str, Parameter(help="Base model name, e.g. smollm2-135m.")],
    dataset: Annotated[str, Parameter(help="Dataset id (see `dataset list`).")],
    config: Annotated[Path | None, Parameter(help="Training config (YAML).")] = None,
    dry_run: Annotated[bool, Parameter(help="Validate and show the cost estimate; start nothing.")] = False,
    force: Annotated[bool, Parameter(help="Start even if the estimate exceeds the budget.")] = False,
    start_from: Annotated[
        str | None,
        Parameter(
            name="--from",
            help="Start from the weights of a checkpoint (<job_id>:<step>, or <job_id> for its latest; "
            "see `tune checkpoints`) or a model id of yours, on the same base model and method.",
        ),
    ] = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Start a fine-tuning job (--dry-run: only validate and estimate its cost; --from: continue
    training from a checkpoint or model, with this job's own config, optimizer and step count)."""
    from api.schemas import StartJobRequest, StartJobResponse
    from cli.output import print_json, usd

    body = StartJobRequest(
        base_model=model,
        dataset_id=dataset,
        config=_read_config(config) if config else {},
        dry_run=dry_run,
        force=force,
        start_from=start_from,
    )
    reply = ctx.client.post(f"/fine-tune/{ctx.user_id}/start", body, type=StartJobResponse)
    if json:
        print_json(reply)
        return
    cost = f"estimated cost {usd(reply.estimate_usd_micros)}"
    if reply.estimate_low_usd_micros is not None and reply.estimate_high_usd_micros is not None:
        cost += (
            f" (range {usd(reply.estimate_low_usd_micros)} to {usd(reply.estimate_high_usd_micros)},"
            f" {reply.estimate_basis or reply.estimate_source}; {reply.estimate_steps} steps)"
        )
    if reply.max_cost_usd_micros is not None:
        cost += f" (limit {usd(reply.max_cost_usd_micros)})"
    for warning in reply.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if dry_run:
        print(
            f"dry run: config valid; {cost} on {reply.gpu_count}x {reply.gpu_type or 'GPU'}; nothing started"
        )
        return
    if reply.start_from is not None:
        print(f"starting from {reply.start_from.kind} {reply.start_from.id}")
    print(f"started {reply.job_id} ({reply.status}); {cost}")
    print(f"follow it with: tune status --job-id {reply.job_id} --follow")


@app.command(name="list")
def list_jobs(
    *,
    state: Annotated[str | None, Parameter(help="Only jobs in this state, e.g. running.")] = None,
    base_model: Annotated[str | None, Parameter(help="Only jobs on this base model.")] = None,
    limit: LimitFlag = 20,
    every: AllFlag = False,
    after: AfterFlag = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """List your fine-tuning jobs, newest first: the latest --limit, or --all."""
    from api.schemas import JobList
    from cli.pages import show_rows

    params = {k: v for k, v in (("state", state), ("base_model", base_model)) if v}
    path = f"/fine-tune/{ctx.user_id}/list"
    show_rows(ctx.client, path, JobList, "jobs", _JOB_COLUMNS, limit=limit, every=every, after=after,
              json=json, params=params)


@app.command
def status(
    *,
    job_id: str,
    follow: Annotated[
        bool, Parameter(help="Print each change until the job ends (live in a terminal).")
    ] = False,
    interval: Annotated[float, Parameter(help="Seconds between polls with --follow.")] = 2.0,
    json: JsonFlag = False,
    ctx: Ctx,
) -> int:
    """Show a job's status; with --follow, exit 0 only if it succeeds.

    --follow prints a line when the state, step, epoch or loss changes (GPU time and cost alone:
    at most one line per 30 s); in a terminal a live footer shows the latest figures.
    """
    from api.schemas import JobStatus
    from cli.output import print_document, print_json
    from domain.job_states import TERMINAL_STATES, JobState

    path = f"/fine-tune/{job_id}/status"
    job = ctx.client.get(path, type=JobStatus)
    if not follow:
        print_json(job) if json else print_document(job, title=job_id)
        return 0
    from cli.follow import follow_job

    job = follow_job(
        lambda: ctx.client.get(path, type=JobStatus),
        job,
        job_id=job_id,
        interval=interval,
        json=json,
        terminal=TERMINAL_STATES | {JobState.PAUSED},  # a paused job waits for `tune resume`
    )
    return 0 if job.status == JobState.SUCCEEDED else 1


@app.command
def stop(*, job_id: str, ctx: Ctx) -> None:
    """Ask a job to stop (a running job saves a checkpoint first)."""
    from api.schemas import StopJobResponse

    reply = ctx.client.post(f"/fine-tune/{job_id}/stop", type=StopJobResponse)
    print(f"stop requested for {job_id} ({reply.status or 'stopping'})")


@app.command
def pause(job_id: str, *, ctx: Ctx) -> None:
    """Pause a job: a running job saves a checkpoint, ends its attempt and releases its hardware
    (nothing is billed while it is paused); `tune resume` continues from that checkpoint."""
    from api.schemas import StopJobResponse

    reply = ctx.client.post(f"/fine-tune/{job_id}/pause", type=StopJobResponse)
    print(f"pause requested for {job_id} ({reply.status or 'pausing'})")


@app.command
def resume(job_id: str, *, ctx: Ctx) -> None:
    """Resume a paused job: a new attempt continues from the checkpoint its pause saved."""
    from api.schemas import StopJobResponse

    reply = ctx.client.post(f"/fine-tune/{job_id}/resume", type=StopJobResponse)
    print(f"{job_id} resumed ({reply.status or 'queued'}): it continues from its last checkpoint")


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
def checkpoints(job_id: str, *, json: JsonFlag = False, ctx: Ctx) -> None:
    """List a job's checkpoints: step, train and validation loss there; start from one with
    `tune start --from <checkpoint id>`."""
    from api.schemas import CheckpointList
    from cli.output import Column, print_json, print_table

    reply = ctx.client.get(f"/fine-tune/{job_id}/checkpoints", type=CheckpointList)
    if json:
        print_json(reply.checkpoints)
        return
    columns = [Column("checkpoint_id", "checkpoint")] + [
        Column(k) for k in ("attempt", "step", "train_loss", "eval_loss", "available", "at")
    ]
    print_table(reply.checkpoints, columns, title=f"checkpoints of {job_id}", empty="no checkpoints yet")


@app.command
def events(*, job_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """List a job's events (the history behind its status and cost)."""
    from api.schemas import JobEvents
    from cli.output import Column, print_json, print_table

    reply = ctx.client.get(f"/fine-tune/{job_id}/events", type=JobEvents)
    if json:
        print_json(reply.events)
    else:
        print_table(reply.events, [Column(k) for k in ("seq", "at", "type", "summary")], empty="no events")


main = console_script(app, "tune")
