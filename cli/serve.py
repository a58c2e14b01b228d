"""``tune serve``: the API, its projector and the workers in one process, on the local bucket by default.

The server packages are imported inside the command, never at module level.
``--home`` and ``--bucket`` set ``TUNE_HOME`` / ``TUNE_BUCKET`` for this
process before the server reads its settings.

Where it listens: ``--host`` and ``--port`` when given, else the host and port of
the API URL (``--api-url`` / ``$TUNE_API_URL``, default ``http://127.0.0.1:8600``),
so the server and the commands run after it agree on one address. The server
speaks plain HTTP: an ``https://`` URL names a TLS proxy in front of it, whose
address is not the server's, so with one ``--host`` and ``--port`` are required.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cyclopts import Parameter

from cli.context import Ctx
from cli.errors import CliError

__all__ = ["listen_address", "serve"]


def listen_address(api_url: str, host: str | None, port: int | None) -> tuple[str, int, str]:
    """``(host, port, where)``: the explicit options, the rest from ``api_url``.

    ``where`` names what a failure to listen should point at: ``--port`` when it was
    given, else the API URL the port came from.
    """
    if host is not None and port is not None:
        return host, port, "--port"
    url = urlsplit(api_url)
    where = "--api-url / TUNE_API_URL"
    if url.scheme != "http":
        raise CliError(
            f"tune serve speaks plain HTTP and the API URL is {api_url}: pass --host and --port "
            "for the server behind your TLS proxy",
            where=where,
        )
    try:
        url_port = url.port or 80
    except ValueError as exc:
        raise CliError(f"the API URL {api_url} has no valid port", where=where) from exc
    if not url.hostname:
        raise CliError(f"the API URL {api_url} has no host", where=where)
    if port is None:
        return host or url.hostname, url_port, where
    return host or url.hostname, port, "--port"


def _check_port_free(host: str, port: int, where: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where=where) from exc


def serve(
    *,
    host: Annotated[
        str | None, Parameter(help="Interface to listen on (default: the API URL's host).")
    ] = None,
    port: Annotated[int | None, Parameter(help="Port to listen on (default: the API URL's port).")] = None,
    home: Annotated[
        Path | None, Parameter(env_var="TUNE_HOME", help="Server home (bucket, secrets); default ~/.tune.")
    ] = None,
    bucket: Annotated[
        str | None, Parameter(env_var="TUNE_BUCKET", help="file:///abs/path or gs://bucket[/prefix].")
    ] = None,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
    ctx: Ctx,
) -> None:
    """Run the API with the projector and workers (first start creates an admin and prints its password).

    It listens where the other commands look for it: the host and port of --api-url / TUNE_API_URL
    (default http://127.0.0.1:8600), unless --host or --port say otherwise.
    """
    host, port, where = listen_address(ctx.api_url, host, port)
    env = dict(os.environ)
    if home is not None:
        env["TUNE_HOME"] = str(home.expanduser().resolve())
    if bucket:
        env["TUNE_BUCKET"] = bucket
    _check_port_free(host, port, where)
    from roles.embedded import serve as run_server
    from runtime.settings import Settings

    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    shown = f"[{host}]" if ":" in host else host
    print(
        f"tune serve: bucket {settings.bucket_url}, API on http://{shown}:{port}", file=sys.stderr, flush=True
    )
    run_server(settings, host=host, port=port, log_level=log_level)
