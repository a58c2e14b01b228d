"""``tune run api|projector|ledger|dispatcher``: one role of the platform per process.

``tune serve`` runs them all in one process (the quick start); on several machines, or to
scale the API, each runs on its own, all on one bucket (``--bucket`` / ``TUNE_BUCKET``) and each
with its own settings (read from its environment once, ``runtime.settings``). How each hears
of the others' commits: ``--changes`` / ``TUNE_CHANGE_FEED`` (``poll`` on a local folder bucket,
``pubsub://project/topic/subscription`` for a GCS bucket's object notifications; one
subscription per process). The server packages are imported inside each command.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

from cli.context import Ctx
from cli.errors import CliError

__all__ = ["run_app"]

run_app = App(name="run", help="Run one role of the platform in this process (tune serve runs them all).")

Home = Annotated[Path | None, Parameter(env_var="TUNE_HOME", help="Server home (secrets, keys); ~/.tune.")]
Bucket = Annotated[str | None, Parameter(env_var="TUNE_BUCKET", help="file:///abs/path or gs://bucket[/prefix].")]
Changes = Annotated[
    str | None,
    Parameter(env_var="TUNE_CHANGE_FEED", help="poll, poll:<seconds> or pubsub://project/topic/subscription."),
]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def _settings(home: Path | None, bucket: str | None, changes: str | None) -> object:
    env = dict(os.environ)
    if home is not None:
        env["TUNE_HOME"] = str(home.expanduser().resolve())
    if bucket:
        env["TUNE_BUCKET"] = bucket
    if changes:
        env["TUNE_CHANGE_FEED"] = changes
    os.environ.update(env)  # the API's workers read their settings in their own processes
    from runtime.settings import Settings

    try:
        return Settings.from_env(env)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


@run_app.command
def api(
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    workers: Annotated[int, Parameter(help="API worker processes, each with its own view cache.")] = 1,
    home: Home = None,
    bucket: Bucket = None,
    changes: Changes = None,
    log_level: LogLevel = "info",
    ctx: Ctx,
) -> None:
    """The API alone (jobs it accepts are launched by `tune run dispatcher`)."""
    if workers < 1:
        raise CliError("--workers must be at least 1", where="--workers")
    from roles.api import run_api

    run_api(_settings(home, bucket, changes), host=host, port=port, workers=workers, log_level=log_level)  # type: ignore[arg-type]


@run_app.command
def projector(*, home: Home = None, bucket: Bucket = None, changes: Changes = None, ctx: Ctx) -> None:
    """Fold every partition that moves into its views."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from roles.projector import run_projector

    run_projector(_settings(home, bucket, changes))  # type: ignore[arg-type]


@run_app.command
def dispatcher(
    *,
    heartbeats: Annotated[str, Parameter(help="Where runners' heartbeats go: pubsub://project/topic/sub.")],
    max_concurrent: Annotated[int, Parameter(help="Runs at once on this machine.")] = 1,
    runner_module: Annotated[str, Parameter(help="The job runner's module.")] = "runners.job_runner",
    backend: Annotated[
        Literal["local", "ray"] | None,
        Parameter(env_var="TUNE_LAUNCH_BACKEND", help="local (children of this process) or ray."),
    ] = None,
    ray_address: Annotated[
        str | None, Parameter(env_var="TUNE_RAY_ADDRESS", help="The Ray cluster's Jobs API, http://host:8265.")
    ] = None,
    home: Home = None,
    bucket: Bucket = None,
    changes: Changes = None,
    ctx: Ctx,
) -> None:
    """Launch the jobs the API processes accept, on this machine (local) or a Ray cluster (ray: the
    runners publish heartbeats to --heartbeats, a pubsub:// URL)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from roles.dispatcher import run_dispatcher

    if backend:
        os.environ["TUNE_LAUNCH_BACKEND"] = backend
    if ray_address:
        os.environ["TUNE_RAY_ADDRESS"] = ray_address
    settings = _settings(home, bucket, changes)
    if settings.launch_backend == "ray" and not heartbeats.startswith("pubsub://"):  # type: ignore[attr-defined]
        raise CliError(
            "runners on Ray publish their heartbeats to Pub/Sub: --heartbeats pubsub://project/topic/subscription",
            where="--heartbeats",
        )

    run_dispatcher(
        settings,  # type: ignore[arg-type]
        heartbeats=heartbeats,
        max_concurrent=max_concurrent,
        runner_module=runner_module,
    )


@run_app.command
def ledger(
    *,
    heartbeats: Annotated[str, Parameter(help="pubsub://project/topic/subscription the runners publish to.")],
    create: Annotated[bool, Parameter(help="Create the topic and subscription if missing.")] = False,
    home: Home = None,
    bucket: Bucket = None,
    ctx: Ctx,
) -> None:
    """Meter heartbeats, raise alerts, stop jobs at budget limits, find lost runners."""
    _settings(home, bucket, None)
    from roles.ledger import main

    argv = ["--heartbeats", heartbeats, *(["--create"] if create else [])]
    if main(argv) != 0:
        raise CliError("the ledger stopped with an error")
