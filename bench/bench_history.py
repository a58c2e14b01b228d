"""Heavy users: list calls and the projector's cost per job state change, at 1,000 and 10,000 jobs.

One user is given ``N`` jobs (submitted, queued, started, succeeded, 500 jobs a commit) straight
through ``UserApp`` on an in-memory bucket; the app (``create_app``, in process, the projector's
loop running) then serves

* ``GET /fine-tune/{user}/list`` without parameters (every job: what a client that does not page
  gets), with ``limit=20`` (a page) and with ``state=queued`` too (one job in 20 is queued):
  p50 / p99 of one call and requests/s of one client calling in a loop (in process: no socket,
  no gzip);
* ``GET /billing/usage`` (the current month: the last ``CURRENT_JOBS`` jobs' usage, the others
  spread over the twelve months before) and ``GET /billing/history`` whole and a page of 3 months;
* the billing fold (``projections.billing.fold``, what the projector and the ledger fold) over
  the user's decoded events, timed alone;
* the projector's cost per job state change: a job queued, started, then succeeded, each one
  commit, then ``catch_up`` timed (p50, mean); and, where the complete listings are coalesced,
  the cost of writing them once (what the loop pays at most once per interval per user).

* the first write after a start: the user's history written one commit per job state change (as a
  server writes it) on a local folder bucket, then a fresh process (no cache, nothing verified yet)
  opens the partition and submits a job: that call is timed, with the process's peak memory.

``--fold 2500 5000 10000`` times the billing fold alone over those many jobs' events, all metered
in one month (the case the fold once copied the month's jobs for on every usage event), and
prints the time per size with its ratio to the smallest against the ratio of events.

Given ``--before DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``), each size is
also measured on that code in a child process, and each figure is printed as before / after with
their ratio (on an older release ``limit`` is ignored: its page of 20 is the whole list).

    .venv/bin/python bench/bench_history.py [--jobs 1000 10000] [--before /tmp/main]
    .venv/bin/python bench/bench_history.py --fold 2500 5000 10000 [--before /tmp/main]
    .venv/bin/python bench/bench_history.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from smoke import parse_args  # noqa: E402

ROUTES = {
    "jobs, every one": ("/fine-tune/{u}/list", {}),
    "jobs, page of 20": ("/fine-tune/{u}/list", {"limit": "20"}),
    "jobs, page of 20, state=queued": ("/fine-tune/{u}/list", {"limit": "20", "state": "queued"}),
    "billing usage": ("/billing/usage", {}),
    "billing history, every month": ("/billing/history", {}),
    "billing history, page of 3": ("/billing/history", {"limit": "3"}),
}
WHOLE = {"jobs, every one", "billing history, every month"}
"""Routes whose reply grows with the history: called a tenth as often."""
CURRENT = "2026-01"
CURRENT_JOBS = 100
"""The last this many jobs are metered in the current month, the others in the twelve before it."""
NOW = datetime(2026, 1, 20, 12, tzinfo=UTC)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _submit(user_id: str, job_id: str, at: datetime) -> Any:
    from domain.job import Job

    return Job.submit(
        job_id=job_id,
        user_id=user_id,
        base_model="tiny-llama",
        dataset_id="ds_1",
        model_id=f"m{job_id[1:]}",
        config={"epochs": 1},
        gpu_type="a100-80gb",
        gpu_count=1,
        max_cost_usd_micros=None,
        estimate_usd_micros=None,
        at=at,
    )


def _month(n: int, jobs: int) -> str:
    """The month job ``n`` of ``jobs`` is metered in (``CURRENT_JOBS`` last ones: ``CURRENT``)."""
    if n >= jobs - CURRENT_JOBS:
        return CURRENT
    return f"2025-{1 + n * 12 // max(1, jobs - CURRENT_JOBS):02d}"


def _meter(job: Any, period: str, at: datetime) -> None:
    job.meter_usage(1, 0, 0, "a100-80gb", 1, 3_600_000, 2_100_000, period, at)


def make_history(app: Any, user_id: str, jobs: int, at: datetime) -> None:
    """``jobs`` finished jobs, 500 a commit for each step of their lives (and one in 20 left queued),
    each that ran metered one hour (``_month``)."""
    for start in range(0, jobs, 500):
        batch = [
            _submit(user_id, f"j{n:06d}", at + timedelta(seconds=n))
            for n in range(start, min(jobs, start + 500))
        ]
        app.save(*batch)
        later = at + timedelta(days=1)
        for job in batch:
            job.queue(later)
        app.save(*batch)
        running = [job for n, job in enumerate(batch) if (start + n) % 20]
        for job in running:
            job.start(1, later)
        app.save(*running)
        for job in running:
            _meter(job, _month(int(job.job_id[1:]), jobs), later)
        app.save(*running)
        for job in running:
            job.mark_succeeded(later, metrics={"loss": 0.1})
        app.save(*running)


def fold_events(jobs: int, period: str = CURRENT) -> list[Any]:
    """The events of ``jobs`` jobs submitted, started and metered one hour in ``period``, unsaved."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[Any] = []
    for n in range(jobs):
        job = _submit("u1", f"j{n:06d}", at)
        job.queue(at)
        job.start(1, at)
        _meter(job, period, at)
        events += job.collect_events()
    return events


def time_fold(events: list[Any], rounds: int = 5) -> float:
    """The best of ``rounds`` folds of ``events`` from an empty state, in seconds."""
    from projections import billing

    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        state = billing.BillingState()
        for event in events:
            state = billing.fold(state, event)
        best = min(best, time.perf_counter() - t)
    return best


def measure_fold(jobs: int) -> dict[str, Any]:
    events = fold_events(jobs)
    return {"events": len(events), "fold_s": time_fold(events)}


def time_rebuild(bucket: Any, partition: str) -> float:
    """Seconds to rebuild the partition's views from event 0 (``python -m projections rebuild``'s work)
    in a freshly opened application: every event read, decoded, folded, each view compared."""
    from projections.audit import rebuild_partition
    from projections.replay import apps_on

    started = time.perf_counter()
    report = rebuild_partition(bucket, partition, apps_on(bucket))
    assert report.ok, report
    return time.perf_counter() - started


def _kb(bucket: Any, name: str) -> float:
    return len(bucket.read(name)) / 1024 if bucket.exists(name) else 0.0


def measure(jobs: int, calls: int, changes: int) -> dict[str, Any]:
    """The figures of one size on the code on ``sys.path`` (run in a child process)."""
    from litestar.testing import TestClient

    from api.app import create_app
    from api.services import AccountService
    from roles.bootstrap import bootstrap
    from runtime.context import Runtime
    from runtime.settings import Settings
    from storage import layout
    from storage.memory import MemoryBucket

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home), bucket_url="memory://", jwt_secret="x" * 32, rate_limit_per_minute=10**9
        )
        rt = Runtime(settings, bucket=MemoryBucket())
        bootstrap(rt)
        user_id = AccountService(rt).create_user("heavy@example.com", "pw-correct horse battery", "user")
        app = rt.user_app(user_id)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        started = time.perf_counter()
        make_history(app, user_id, jobs, at)
        partition = layout.user_partition(user_id)
        rt.projector.catch_up(partition)
        out["history_s"] = time.perf_counter() - started
        out["jobs_json_kb"] = len(rt.bucket.read(layout.jobs(user_id))) / 1024
        out["billing_kb"] = _kb(rt.bucket, layout.billing(user_id))
        out["billing_history_kb"] = _kb(rt.bucket, layout.billing_history(user_id))
        from projections.replay import read_events

        out["fold_s"] = time_fold([event for _, event in read_events(app)])
        out["rebuild_s"] = time_rebuild(rt.bucket, partition)
        with TestClient(create_app(settings, runtime=rt)) as client:
            login = {"email": "heavy@example.com", "password": "pw-correct horse battery"}
            token = client.post("/auth/login", json=login).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            rt.clock = lambda: NOW  # in the current month
            for label, (path, params) in ROUTES.items():
                url = path.format(u=user_id)
                n = max(10, calls // 10) if label in WHOLE else calls
                assert client.get(url, params=params, headers=headers).status_code == 200
                samples = []
                for _ in range(n):
                    t = time.perf_counter()
                    reply = client.get(url, params=params, headers=headers)
                    samples.append(time.perf_counter() - t)
                    assert reply.status_code == 200
                out[label] = {
                    "p50_ms": _percentile(samples, 0.5) * 1e3,
                    "p99_ms": _percentile(samples, 0.99) * 1e3,
                    "rps": n / sum(samples),
                    "kb": len(reply.content) / 1024,
                }
            # the projector: one job's life, one commit a state change, each caught up alone
            extra = [_submit(user_id, f"k{n:06d}", at + timedelta(days=2, seconds=n)) for n in range(changes)]
            app.save(*extra)
            rt.projector.catch_up(partition)
            costs = []
            for n, job in enumerate(extra):
                when = at + timedelta(days=3)
                for step in range(1 + n % 3):  # queued; then started; then succeeded
                    if step == 0:
                        job.queue(when)
                    elif step == 1:
                        job.start(1, when)
                    else:
                        job.mark_succeeded(when, metrics={})
                    app.save(job)
                    t = time.perf_counter()
                    rt.projector.catch_up(partition)
                    costs.append(time.perf_counter() - t)
            out["projector"] = {
                "p50_ms": statistics.median(costs) * 1e3,
                "mean_ms": statistics.fmean(costs) * 1e3,
            }
            flush = getattr(rt.projector, "flush_deferred", None)
            if flush is not None:  # the complete listings, written once per interval
                rt.projector.catch_up(partition)
                t = time.perf_counter()
                flush(partition, force=True)
                out["listings_once_ms"] = (time.perf_counter() - t) * 1e3
    return out


def first_write(jobs: int) -> dict[str, Any]:
    """Write ``jobs`` jobs' lives one commit a change on a folder, then time a fresh process's first write."""
    from domain.dataset import Dataset
    from storage.eventstore.factory import open_user
    from storage.eventstore.ledger import ledger_for
    from storage.local import LocalBucket

    home = tempfile.mkdtemp()
    os.environ["TUNE_HOME"] = home
    bucket = LocalBucket(Path(home) / "bucket", fsync=False)
    ledger_for(bucket)
    app = open_user(bucket, "heavy")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    dataset = Dataset.upload(
        dataset_id="ds_1", user_id="heavy", filename="a.jsonl", size_bytes=1, sha256="0" * 64, at=at
    )
    dataset.validate("chat", 1, {}, at)
    app.save(dataset)
    for n in range(jobs):
        job = _submit("heavy", f"j{n:06d}", at)
        app.save(job)
        job.queue(at)
        app.save(job)
        job.start(1, at)
        app.save(job)
        job.mark_succeeded(at, metrics={})
        app.save(job)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNE_HOME": home}
    done = subprocess.run(
        [sys.executable, __file__, "--restart", str(bucket.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"the first write after a start failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def restarted(root: Path) -> dict[str, Any]:
    """In a fresh process: open the heavy user's partition and submit one job (timed), then another."""
    import resource

    from storage.eventstore.factory import open_user
    from storage.eventstore.ledger import ledger_for
    from storage.local import LocalBucket

    bucket = LocalBucket(root, fsync=False)
    ledger_for(bucket)
    at = datetime(2026, 2, 1, tzinfo=UTC)
    open_user(bucket, "other").recorder.log.max_notification_id()  # imports, the keyring: not the user's cost
    out = {}
    for label in ("first_write_ms", "second_write_ms"):
        t = time.perf_counter()
        app = open_user(bucket, "heavy")
        app.submit_job(
            base_model="tiny-llama",
            dataset_id="ds_1",
            config={"epochs": 1},
            gpu_type="a100-80gb",
            gpu_count=1,
            at=at,
        )
        out[label] = (time.perf_counter() - t) * 1e3
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child(code: Path, jobs: int, calls: int, changes: int, *, fold: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--jobs", str(jobs), "--calls", str(calls),
         "--changes", str(changes), *(["--fold", str(jobs)] if fold else [])],
        cwd=code, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"measuring {jobs} jobs on {code} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _row(label: str, before: float | None, after: float, unit: str) -> str:
    if before is None:
        return f"  {label:<44} {after:>9.2f} {unit}"
    return f"  {label:<44} {before:>9.2f} -> {after:>8.2f} {unit}  {before / after:6.2f}x faster"


def report(jobs: int, after: dict[str, Any], before: dict[str, Any] | None) -> None:
    made = (
        f"jobs.json {after['jobs_json_kb']:,.0f} KB, billing.json {after['billing_kb']:,.0f} KB, "
        f"billing_history.json {after['billing_history_kb']:,.0f} KB; "
        f"history made in {after['history_s']:.1f}s"
    )
    print(f"{jobs:,} jobs ({made}):")
    for label in ROUTES:
        a, b = after[label], (before or {}).get(label)
        print(_row(f"{label}: p50", b and b["p50_ms"], a["p50_ms"], "ms"))
        print(_row(f"{label}: p99", b and b["p99_ms"], a["p99_ms"], "ms"))
        rps = f"{b['rps']:,.0f} -> " if b else ""
        print(f"  {label + ': requests/s (1 client)':<44} {rps}{a['rps']:,.0f}  ({a['kb']:.1f} KB a reply)")
    b = (before or {}).get("fold_s")
    print(_row("billing fold of the user's events", b and b * 1e3, after["fold_s"] * 1e3, "ms"))
    b = (before or {}).get("rebuild_s")
    print(_row("rebuild of the user's views from 0", b and b * 1e3, after["rebuild_s"] * 1e3, "ms"))
    b = (before or {}).get("projector")
    print(_row("projector per job state change: p50", b and b["p50_ms"], after["projector"]["p50_ms"], "ms"))
    print(
        _row("projector per job state change: mean", b and b["mean_ms"], after["projector"]["mean_ms"], "ms")
    )
    b = before or {}
    print(_row("first write after a start", b.get("first_write_ms"), after["first_write_ms"], "ms"))
    print(_row("second write", b.get("second_write_ms"), after["second_write_ms"], "ms"))
    print(_row("peak RSS of the restarted process", b.get("peak_rss_mb"), after["peak_rss_mb"], "MB"))
    if "listings_once_ms" in after:
        print(f"  {'complete listings, written once per interval':<44} {after['listings_once_ms']:>9.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument(
        "--calls", type=int, default=300, help="calls per paged route (a tenth for the full list)"
    )
    parser.add_argument(
        "--changes", type=int, default=30, help="jobs whose state changes are caught up one by one"
    )
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the code to compare with")
    parser.add_argument(
        "--fold", type=int, nargs="+", default=None, help="only time the billing fold at these many jobs"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--restart", type=Path, default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, jobs=[60, 300], calls=20, changes=4)
    if args.child:
        if args.fold:
            print(json.dumps(measure_fold(args.fold[0])))
        else:
            measured = measure(args.jobs[0], args.calls, args.changes)
            print(json.dumps({**measured, **first_write(args.jobs[0])}))
        return
    if args.restart:
        print(json.dumps(restarted(args.restart)))
        return
    if args.fold:
        fold_sizes(args.fold, args.before)
        return
    results = {}
    for jobs in args.jobs:
        before = child(args.before, jobs, args.calls, args.changes) if args.before else None
        after = child(HERE.parent, jobs, args.calls, args.changes)
        results[jobs] = after
        report(jobs, after, before)
    small, large = min(results), max(results)
    if small != large:
        page = "jobs, page of 20"
        ratio = results[large][page]["p50_ms"] / results[small][page]["p50_ms"]
        change = results[large]["projector"]["p50_ms"] / results[small]["projector"]["p50_ms"]
        usage = results[large]["billing usage"]["p50_ms"] / results[small]["billing usage"]["p50_ms"]
        fold = results[large]["fold_s"] / results[small]["fold_s"]
        rebuild = results[large]["rebuild_s"] / results[small]["rebuild_s"]
        sizes = f"{large:,} vs {small:,} jobs"
        print(
            f"{sizes}: page of 20 p50 {ratio:.2f}x, billing usage p50 {usage:.2f}x, "
            f"projector per change p50 {change:.2f}x, "
            f"billing fold {fold:.2f}x, rebuild {rebuild:.2f}x for {large / small:.0f}x the jobs"
        )


def fold_sizes(sizes: list[int], before: Path | None) -> None:
    """The billing fold alone at each size (all usage in one month), before / after."""
    found: dict[str, dict[int, dict[str, Any]]] = {"after": {}}
    if before is not None:
        found["before"] = {}
    for jobs in sizes:
        for which in found:
            code = before if which == "before" else HERE.parent
            assert code is not None
            found[which][jobs] = child(code, jobs, 0, 0, fold=True)
    small = min(sizes)
    print("billing fold, every job's usage in one month:")
    for jobs in sizes:
        after = found["after"][jobs]
        b = found.get("before", {}).get(jobs)
        print(
            _row(
                f"{jobs:,} jobs ({after['events']:,} events)",
                b and b["fold_s"] * 1e3,
                after["fold_s"] * 1e3,
                "ms",
            )
        )
        for which, runs in found.items():
            events = runs[jobs]["events"] / runs[small]["events"]
            time_ratio = runs[jobs]["fold_s"] / runs[small]["fold_s"]
            print(f"    {which}: {events:.1f}x the events of {small:,} jobs, {time_ratio:.2f}x the time")


if __name__ == "__main__":
    main()
