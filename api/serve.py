"""Serve the API with granian: ``serve(settings, host, port)`` (used by ``tune serve``).

Granian (Rust HTTP/1.1 on tokio) runs embedded in this process's asyncio loop, so
the projector and the workers (``runners.embedded``) share the ``Runtime`` with
the handlers. Measured against uvicorn with the same app on two cores: about
1.4x the requests/s and a p99 under 20 ms at 50 connections where uvicorn's was
21-95 ms (``bench/bench_api.py``). Start-up objects are frozen out of the
garbage collector's generations: a full collection over them was the tail.
SIGINT and SIGTERM stop the server gracefully (lifespan shutdown), then the workers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Any

from api.app import create_app
from api.bootstrap import bootstrap, login_hint
from api.runtime import Runtime
from api.settings import Settings

__all__ = ["run_granian", "serve"]


def run_granian(app: Any, *, host: str, port: int, log_level: str = "info", access_log: bool = False) -> None:
    """Serve the ASGI ``app`` on ``host:port`` until SIGINT or SIGTERM."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        log_level=LogLevels(log_level),
        log_access=access_log,
        backlog=1024,
    )
    # granian says "Embedded server is experimental!" at every start: true of its API, not of serving
    logging.getLogger("_granian").addFilter(lambda record: "experimental" not in record.getMessage())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    gc.collect()
    gc.freeze()
    asyncio.run(main())


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    runtime: Runtime | None = None,
    log_level: str = "info",
) -> None:
    """Bootstrap a new home (printing how to log in), then serve until interrupted."""
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
        run_granian(
            create_app(settings, runtime=runtime),
            host=host,
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
        )
    finally:
        workers.close()
