"""The API on its own: ``tune run api``, one or several granian worker processes.

Each worker is its own process with its own ``Runtime`` (view cache, projector, change feed):
``app()`` is granian's factory, called once in each worker. A worker folds the partitions its
own requests wrote (read-your-writes) and leaves every other commit to the projector role
(``tune run projector``, which every deployment runs): its change feed (``TUNE_CHANGE_FEED``;
``runtime.context``, ``fold_others=False``) tells it which partitions moved, and it reads their
views from the bucket again, so a suspension, a quota or a role change made by any process
reaches every worker within 2 s. On ``pubsub://project/topic/<name>`` each worker pulls
a subscription of its own (``storage.changes.per_process``: ``<name>-<host>-<pid>-<random>``, made
at its start, deleted at its clean shutdown, expiring if it dies): one subscription shared by the
workers would hand each notification to one of them only. Jobs submitted here are queued by the dispatcher
role (``roles.dispatcher``), which follows the user partitions: nothing is dispatched in here.
The workers serve no chat completions (``/v1/chat/completions`` answers that no engine is here).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import msgspec

from api.app import create_app
from api.auth import jwt_secret_of
from roles.bootstrap import bootstrap, hand_over
from runtime.context import Runtime
from runtime.settings import Settings, ledger_of
from storage.changes import per_process
from storage.open import ensure_home

__all__ = ["app", "run_api"]


def app() -> Any:
    """The ASGI app of one worker (granian's factory): settings read once, a Runtime of its own."""
    settings = Settings.from_env()
    settings = msgspec.structs.replace(settings, change_feed=per_process(settings.change_feed))
    runtime = Runtime(settings, fold_others=False)
    ledger_of(settings, runtime.bucket, role="api")
    return create_app(settings, runtime=runtime)


def run_api(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Bootstrap a new home once, then serve ``workers`` processes on ``host:port`` until interrupted."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    os.umask(0o077)
    ensure_home(settings.home)
    runtime = Runtime(settings)
    ledger_of(settings, runtime.bucket, role="api")
    jwt_secret_of(settings)  # made once here, so every worker signs with the same secret
    first = bootstrap(runtime)  # the workers find the platform made
    if first is not None:
        hand_over(first, f"http://{host}:{port}", settings.home, sys.stderr)
    logging.getLogger("api").setLevel(log_level.upper())
    Granian(
        "roles.api:app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        log_level=LogLevels(log_level),
        log_access=log_level == "debug",
    ).serve()
