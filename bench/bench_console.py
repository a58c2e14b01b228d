"""Bench: server time of the console's job page and billing page against their JSON endpoints.

One user with ``--jobs`` jobs in their history (1,000 by default; submitted through the user's
application, each billed this month (one metered run: the billing page's by-job table is that
long), the last one running with ``--steps`` logged steps, an eval every 50, and a log) on a
local bucket. Both are asked ``--requests`` times through the real app in this process (Litestar's
test client: no network, no other load), signed in as the console and the CLI are:

- ``status``: ``GET /fine-tune/{job_id}/status`` (bearer token): the baseline;
- ``page``: ``GET /console/jobs/{job_id}`` (session cookie): status, curves, checkpoints, log tail,
  the month's billing, rendered;
- ``usage``: ``GET /billing/usage`` (bearer token): the billing page's baseline;
- ``billing``: ``GET /console/billing`` (session cookie): the month by GPU type and by job, past
  months, budget, alerts, prices, rendered.

Printed: median and p99 of each in ms, and each page's p99 as a multiple of its baseline's. Goal:
each page's p99 <= 50 ms with 1,000 jobs in the history.

    .venv/bin/python bench/bench_console.py [--jobs 1000] [--steps 1000] [--requests 300]
    .venv/bin/python bench/bench_console.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

from scratch import scratch_dir
from smoke import parse_args

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITESTAR_WARN_IMPLICIT_SYNC_TO_THREAD", "0")

EMAIL, PASSWORD = "bench@example.com", "bench-password-console"
GOAL_P99_MS = 50.0


def prepare(home: Path, jobs: int, steps: int):  # type: ignore[no-untyped-def]
    """The app, a test client signed in both ways, and the measured job's id."""
    from litestar.testing import TestClient

    from api.app import create_app
    from api.services import AccountService
    from domain.metering import FixedUsage, UsageRun
    from domain.money import period_of
    from roles.bootstrap import bootstrap
    from runtime.context import Runtime
    from runtime.settings import Settings
    from storage import layout

    settings = Settings(home=home, bucket_url=f"file://{home / 'bucket'}?fsync=0", jwt_secret="b" * 40,
                        rate_limit_per_minute=10_000_000)  # fmt: skip
    runtime = Runtime(settings)
    bootstrap(runtime)
    user_id = AccountService(runtime).create_user(EMAIL, PASSWORD)
    app = runtime.user_app(user_id)
    now = runtime.clock()
    dataset_id = "ds_bench"
    app.upload_dataset(dataset_id, "train.jsonl", 100, "0" * 64, now)
    app.validate_dataset(dataset_id, "chat", 10, {}, now)
    job_id = ""
    billed = []
    for n in range(jobs):
        job_id = app.submit_job(
            base_model="tiny-llama", dataset_id=dataset_id, config={"epochs": 1}, gpu_type="cpu",
            gpu_count=1, at=now, max_cost_usd_micros=5_000_000,
        )  # fmt: skip
        app.queue_job(job_id, now)
        app.start_job(job_id, 1, now)
        billed.append(UsageRun(job_id=job_id, attempt=1, first_seq=1, last_seq=1, gpu_type="cpu",
                               gpu_count=1, gpu_ms=60_000 + n, usd_micros_per_hour=50_000,
                               period=period_of(now), last_at=now, heartbeats=1))  # fmt: skip
    for start in range(0, len(billed), 100):  # the ledger's batches
        batch = FixedUsage(billed[start : start + 100])
        app.meter_usage(batch.job_ids, batch, now)
    for run in billed[:-1]:  # the history: every job but the measured one has ended
        app.mark_failed(run.job_id, "bench: ended", now)
    at = now.isoformat()
    records = [
        {"event": "step", "step": n, "total_steps": steps * 2, "epoch": n / steps, "loss": 3 / n,
         "tokens": 100 * n, "attempt": 1, "at": at}
        for n in range(1, steps + 1)
    ]  # fmt: skip
    records += [{"event": "eval", "step": n, "eval_loss": 3 / n, "attempt": 1, "at": at}
                for n in range(50, steps + 1, 50)]  # fmt: skip
    bucket = runtime.bucket
    bucket.write(
        layout.attempt_metrics(user_id, job_id, 1), "".join(json.dumps(r) + "\n" for r in records).encode()
    )
    bucket.write(layout.attempt_log(user_id, job_id, 1), b"".join(b"step %d\n" % n for n in range(steps)))
    runtime.committed(layout.user_partition(user_id))
    client = TestClient(create_app(settings, runtime=runtime))
    return client, user_id, job_id


def sign_in(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    token = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["token"]
    page = client.get("/console/sign-in")
    csrf = re.search(r'name="_csrf_token" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    reply = client.post("/console/sign-in", data={"email": EMAIL, "password": PASSWORD, "_csrf_token": csrf},
                        follow_redirects=False)  # fmt: skip
    assert reply.status_code == 303, reply.text
    return {"Authorization": f"Bearer {token}"}


def measure(client, path: str, requests: int, headers: dict[str, str] | None = None) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(min(20, requests)):  # warm: views decoded, templates compiled
        assert client.get(path, headers=headers).status_code == 200
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        reply = client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert reply.status_code == 200
    return times


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    args = parse_args(parser, jobs=20, steps=50, requests=20)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with scratch_dir("bench-console-") as folder:
        started = time.perf_counter()
        client, _, job_id = prepare(Path(folder), args.jobs, args.steps)
        ready_s = time.perf_counter() - started
        print(f"{args.jobs} jobs, {args.steps} steps on the measured one: ready in {ready_s:.1f} s")
        with client:
            bearer = sign_in(client)
            status = measure(client, f"/fine-tune/{job_id}/status", args.requests, bearer)
            page = measure(client, f"/console/jobs/{job_id}", args.requests)
            usage = measure(client, "/billing/usage", args.requests, bearer)
            billing = measure(client, "/console/billing", args.requests)
    rows = (
        ("status (JSON, baseline)", status),
        ("job page (HTML)", page),
        ("usage (JSON, baseline)", usage),
        ("billing page (HTML)", billing),
    )
    for name, times in rows:
        print(f"{name:<24} median {statistics.median(times):7.2f} ms   p99 {p99(times):7.2f} ms")
    for name, measured, baseline, of in (
        ("job page", page, status, "status"),
        ("billing page", billing, usage, "usage"),
    ):
        verdict = "meets" if p99(measured) <= GOAL_P99_MS else "MISSES"
        ratio = p99(measured) / p99(baseline)
        print(f"{name} p99 {ratio:.2f}x the {of}'s; {verdict} the goal (p99 <= {GOAL_P99_MS:.0f} ms)")


if __name__ == "__main__":
    main()
