"""Bench: authenticated reads of the API against a bare Litestar JSON endpoint with the same auth.

Three servers' worth of numbers from one run, each its own process on 127.0.0.1
served as ``tune serve`` serves (``roles.http.run_granian``: granian embedded,
start-up objects frozen out of the GC; ``--server uvicorn`` for uvicorn with
uvloop and httptools):

- ``bare``: a Litestar app with only ``JWTAuth`` (same secret, same token, and the same token class
  as the real app, ``api.auth.RememberedToken``: a verified token is remembered until it expires, so
  both do the same auth work and the ratio is the rest of the request) and one GET returning a
  small Struct;
- ``status``: ``GET /fine-tune/{job_id}/status`` of the real app (auth, per-user rate limit, id guard,
  view read);
- ``usage``: ``GET /billing/usage`` of the real app.

The load comes from ``wrk`` (Debian's package; one thread, ``--connections``
keep-alive connections) when it is installed, else (or with ``--client python``)
from an asyncio client in this process, each connection sending its next request
when the last answer is complete. wrk costs the two cores far less than the
Python client, whose own latency lands in its figures. Each endpoint runs
``--rounds`` times for ``--seconds``; the best round counts (the machine may be
shared). The workers of ``tune serve`` are not started: the bench's job stays
queued rather than training beside the load. Goal: each real read >= 0.5x the
bare requests/s, p99 < 20 ms at 50 connections.

    .venv/bin/python bench/bench_api.py [--connections 50] [--seconds 5] [--rounds 2] \
        [--client wrk|python] [--server granian|uvicorn]
    .venv/bin/python bench/bench_api.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
from litestar import Litestar, get
from litestar.security.jwt import JWTAuth, Token
from scratch import scratch_dir
from smoke import parse_args

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-0123456789-0123456789-0123456789"
EMAIL, PASSWORD = "bench@example.com", "bench-password"


# -- the servers (run in subprocesses: `bench_api.py --serve app|bare --port N --home H`) ----------


class BareReply(msgspec.Struct):
    job_id: str
    status: str
    step: int


@get("/bare/{job_id:str}", sync_to_thread=False)
def bare(job_id: str) -> BareReply:
    return BareReply(job_id=job_id, status="running", step=1)


async def _bare_user(token: Token, _: object) -> str:
    return token.sub


def _bare_app() -> Litestar:
    from api.auth import RememberedToken  # the real app's token class: the same auth work

    auth = JWTAuth[str, Token](
        token_secret=SECRET, token_cls=RememberedToken, retrieve_user_handler=_bare_user
    )
    return Litestar([bare], on_app_init=[auth.on_app_init])


def _real_app(home: Path):  # type: ignore[no-untyped-def]
    from api.app import create_app
    from api.services import AccountService
    from roles.bootstrap import bootstrap
    from runtime.context import Runtime
    from runtime.settings import Settings

    settings = Settings(
        home=home, bucket_url=f"file://{home / 'bucket'}?fsync=0",  # not durable: measures the HTTP stack
        jwt_secret=SECRET, rate_limit_per_minute=10_000_000
    )
    runtime = Runtime(settings)
    bootstrap(runtime)
    AccountService(runtime).create_user(EMAIL, PASSWORD)
    return create_app(settings, runtime=runtime)


def serve(kind: str, port: int, home: Path, server_name: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    app = _bare_app() if kind == "bare" else _real_app(home)
    if server_name == "granian":
        from roles.http import run_granian

        run_granian(app, host="127.0.0.1", port=port, log_level="error")
        return
    import uvicorn

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", access_log=False, loop="uvloop", http="httptools"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, home: Path, server_name: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "LITESTAR_WARN_IMPLICIT_SYNC_TO_THREAD": "0"}
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--home", str(home),
           "--server", server_name]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- HTTP setup calls (urllib) ----------------------------------------------------------------------


def _call(
    url: str, method: str = "GET", body: bytes | None = None, token: str | None = None, ctype: str = ""
) -> dict:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def prepare(url: str) -> tuple[str, str]:
    """Log in, upload a dataset and start a job on the real server; return (token, job_id)."""
    login = _call(
        f"{url}/auth/login",
        "POST",
        json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
        ctype="application/json",
    )
    token, user_id = login["token"], login["user_id"]
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(20)
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ds = _call(
        f"{url}/datasets/{user_id}/upload?filename=b.jsonl", "POST", data, token, "application/octet-stream"
    )
    start = {"base_model": "tiny-llama", "dataset_id": ds["dataset_id"], "config": {"epochs": 1}}
    job = _call(
        f"{url}/fine-tune/{user_id}/start", "POST", json.dumps(start).encode(), token, "application/json"
    )
    _call(f"{url}/billing/usage", token=token)
    return token, job["job_id"]


# -- the load ----------------------------------------------------------------------------------------


async def _connection(host: str, port: int, request: bytes, stop: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def _load(
    url: str, path: str, token: str, connections: int, seconds: float
) -> tuple[float, float, float]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    await _connection(host, int(port), request, time.perf_counter() + 0.3, [])  # warm-up
    start = time.perf_counter()
    stop = start + seconds
    await asyncio.gather(
        *(_connection(host, int(port), request, stop, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, qs[49] * 1000, qs[98] * 1000


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, path: str, token: str, connections: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run (whole seconds); any non-2xx answer is an error."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency",
         "-H", f"Authorization: Bearer {token}", f"{url}{path}"],
        capture_output=True, text=True, check=True,
    )
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def percentile(p: int) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * _WRK_UNITS[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, percentile(50), percentile(99)


Target = tuple[str, str, str]  # url, path, token


def measure(targets: dict[str, Target], args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    """Best round of each target; rounds interleave the targets so a busy moment hits them alike."""
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(args.rounds):
        for name, (url, path, token) in targets.items():
            if args.client == "wrk":
                got = _wrk(url, path, token, args.connections, args.seconds)
            else:
                got = asyncio.run(_load(url, path, token, args.connections, args.seconds))
            if name not in best or got[0] > best[name][0]:
                best[name] = got
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    default_client = "wrk" if shutil.which("wrk") else "python"
    parser.add_argument("--client", choices=["wrk", "python"], default=default_client)
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument("--serve", choices=["app", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parse_args(parser, connections=2, seconds=0.5, rounds=1)
    if args.serve:
        serve(args.serve, args.port, args.home, args.server)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with (
        scratch_dir() as tmp,
        server("bare", Path(tmp), args.server) as bare,
        server("app", Path(tmp), args.server) as app,
    ):
        token, job_id = prepare(app)
        results = measure(
            {
                "bare GET (JWT auth)": (bare, f"/bare/{job_id}", token),
                "GET /fine-tune/{job_id}/status": (app, f"/fine-tune/{job_id}/status", token),
                "GET /billing/usage": (app, "/billing/usage", token),
            },
            args,
        )
    base = results["bare GET (JWT auth)"][0]
    print(
        f"{args.connections} connections, {args.seconds:g} s x {args.rounds} rounds (best), "
        f"server {args.server}, client {args.client}"
    )
    print(f"{'endpoint':34} {'req/s':>9} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rate, p50, p99) in results.items():
        print(f"{name:34} {rate:9.0f} {rate / base:7.2f}x {p50:8.2f} {p99:8.2f}")


if __name__ == "__main__":
    main()
