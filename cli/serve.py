"""``tune serve``: the API, its projector and the workers in one process, on the local bucket by default.

The server packages are imported inside the command, never at module level.
``--home`` and ``--bucket`` set ``TUNE_HOME`` / ``TUNE_BUCKET`` for this
process before the server reads its settings.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter

from cli.errors import CliError

__all__ = ["serve"]


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="--port") from exc


def serve(
    *,
    host: Annotated[str, Parameter(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="Port to listen on.")] = 8600,
    home: Annotated[
        Path | None, Parameter(env_var="TUNE_HOME", help="Server home (bucket, secrets); default ~/.tune.")
    ] = None,
    bucket: Annotated[
        str | None, Parameter(env_var="TUNE_BUCKET", help="file:///abs/path or gs://bucket[/prefix].")
    ] = None,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
) -> None:
    """Run the API with the projector and workers (first start creates an admin and prints its password)."""
    env = dict(os.environ)
    if home is not None:
        env["TUNE_HOME"] = str(home.expanduser().resolve())
    if bucket:
        env["TUNE_BUCKET"] = bucket
    _check_port_free(host, port)
    from roles.embedded import serve as run_server
    from runtime.settings import Settings

    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(
        f"tune serve: bucket {settings.bucket_url}, API on http://{host}:{port}", file=sys.stderr, flush=True
    )
    run_server(settings, host=host, port=port, log_level=log_level)
