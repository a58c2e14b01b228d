"""Serve the API with uvicorn: ``serve(settings, host, port)`` (used by ``tune serve``)."""

from __future__ import annotations

import logging
import sys

from api.app import create_app
from api.bootstrap import bootstrap, login_hint
from api.runtime import Runtime
from api.settings import Settings

__all__ = ["serve"]


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    runtime: Runtime | None = None,
    log_level: str = "info",
) -> None:
    """Bootstrap a new home (printing how to log in), then serve until interrupted."""
    import uvicorn

    settings = settings or Settings.from_env()
    runtime = runtime or Runtime(settings)
    first = bootstrap(runtime)
    if first is not None:
        print(login_hint(first, f"http://{host}:{port}"), file=sys.stderr, flush=True)
    logging.getLogger("api").setLevel(log_level.upper())
    from runners.embedded import EmbeddedWorkers

    workers = EmbeddedWorkers(runtime)
    workers.start()
    try:
        uvicorn.run(create_app(settings, runtime=runtime), host=host, port=port, log_level=log_level)
    finally:
        workers.close()
