"""Many users: what ``tune admin audit`` costs (time, peak memory), and what a job costs on disk.

``--users`` users are given ``--jobs`` jobs each on a local folder bucket, written as a server
writes them (one commit per state change: submitted, queued, started, succeeded; signed), and
their views are projected. Then:

* **storage**: what the users' partitions hold, per job: file data bytes, disk blocks (``st_blocks``:
  what the file system allocates) and objects, in all and by kind (``storage.layout.check_key``:
  commits, segments, log index, views...);
* **audit**: ``tune admin audit`` run in a fresh process on that bucket (``--workers`` each given,
  and the default), timed, with its peak RSS (``ru_maxrss``) and that of its largest worker
  process. Given ``--before DIR`` (another checkout), that code's audit is measured too and each
  figure printed as before / after with their ratio. Every run must print the same report.

    .venv/bin/python bench/bench_audit.py [--users 1000 --jobs 10] [--workers 1 2] [--before /tmp/main]
    .venv/bin/python bench/bench_audit.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from smoke import parse_args  # noqa: E402


def make_bucket(root: Path, users: int, jobs: int) -> float:
    """``users`` users with ``jobs`` jobs' lives each under ``root``, views projected; seconds taken."""
    from domain.dataset import Dataset
    from domain.job import Job
    from projections.projector import Projector
    from projections.replay import apps_on
    from storage.eventstore.factory import open_user
    from storage.eventstore.ledger import ledger_for
    from storage.layout import user_partition
    from storage.local import LocalBucket

    started = time.perf_counter()
    bucket = LocalBucket(root, fsync=False)
    ledger_for(bucket)
    projector = Projector(bucket, apps_on(bucket))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for u in range(users):
        user_id = f"usr_{u:024x}"
        app = open_user(bucket, user_id)
        dataset = Dataset.upload(dataset_id="ds_1", user_id=user_id, filename="a.jsonl", size_bytes=1,
                                 sha256="0" * 64, at=at)  # fmt: skip
        dataset.validate("chat", 1, {}, at)
        app.save(dataset)
        for n in range(jobs):
            job = Job.submit(job_id=f"j{n:06d}", user_id=user_id, base_model="tiny-llama", dataset_id="ds_1",
                             model_id=f"m{n:06d}", config={"epochs": 1}, gpu_type="a100-80gb", gpu_count=1,
                             max_cost_usd_micros=None, estimate_usd_micros=None, at=at)  # fmt: skip
            app.save(job)
            job.queue(at)
            app.save(job)
            job.start(1, at)
            app.save(job)
            job.mark_succeeded(at, metrics={"loss": 0.1})
            app.save(job)
        projector.catch_up(user_partition(user_id))
        projector.flush_deferred(user_partition(user_id), force=True)
    return time.perf_counter() - started


def storage_cost(root: Path) -> dict[str, dict[str, int]]:
    """Bytes, disk blocks and objects under ``users/``, in all and by layout kind."""
    from storage.layout import check_key

    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"bytes": 0, "disk": 0, "objects": 0})
    for path in (root / "users").rglob("*"):
        if not path.is_file():
            continue
        try:
            kind = check_key(path.relative_to(root).as_posix())
        except ValueError:
            kind = "other"
        stat = path.stat()
        for name in (kind, "all"):
            kinds[name]["bytes"] += stat.st_size
            kinds[name]["disk"] += stat.st_blocks * 512
            kinds[name]["objects"] += 1
    return dict(kinds)


def _peak_mb() -> float:
    """This process's peak RSS since it started (``VmHWM``; ``ru_maxrss`` also counts the parent's
    peak from before the exec, e.g. the bench's own while it built the bucket)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def audit_child(argv: list[str]) -> None:
    """In a fresh process (the code on ``PYTHONPATH``): ``tune admin audit ARGV``, its figures on stderr."""
    import contextlib
    import io
    import resource

    from cli.tune import main

    out = io.StringIO()
    started = time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            main(["admin", "audit", *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
    seconds = time.perf_counter() - started
    figures = {
        "seconds": seconds,
        "code": code,
        "peak_rss_mb": _peak_mb(),
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # spawned: small
        "last_line": out.getvalue().strip().splitlines()[-1],
        "report": out.getvalue(),
    }
    print(json.dumps(figures), file=sys.stderr)


def run_audit(code: Path, home: Path, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TUNE_HOME": str(home),
           "TUNE_BUCKET": (home / "bucket").as_uri() + "?fsync=0"}  # fmt: skip
    done = subprocess.run([sys.executable, __file__, "--audit-child", *args], cwd=code, env=env,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the audit on {code} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--jobs", type=int, default=10, help="jobs per user")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="audit with these --workers")
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the code to compare with")
    parser.add_argument("--audit-child", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, users=6, jobs=2, workers=[1])
    if args.audit_child is not None:
        audit_child(args.audit_child)
        return
    home = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp())
    home.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(dir=home))
    os.environ["TUNE_HOME"] = str(home)
    made = make_bucket(home / "bucket", args.users, args.jobs)
    jobs = args.users * args.jobs
    print(f"{args.users:,} users x {args.jobs} jobs ({jobs:,} jobs, 4 commits each) written in {made:.1f}s")
    kinds = storage_cost(home / "bucket")
    every = kinds.pop("all")
    print(
        f"  on disk per job: {every['bytes'] / jobs / 1024:.1f} KB of file data, "
        f"{every['disk'] / jobs / 1024:.1f} KB of disk blocks, {every['objects'] / jobs:.1f} objects "
        f"({every['disk'] / max(1, every['bytes']):.2f} x the data on disk)"
    )
    for kind, k in sorted(kinds.items(), key=lambda item: -item[1]["disk"]):
        print(
            f"    {kind:<24} {k['bytes'] / jobs / 1024:7.2f} KB data {k['disk'] / jobs / 1024:7.2f} KB disk "
            f"{k['objects'] / jobs:6.2f} objects per job"
        )
    runs: list[tuple[str, list[str]]] = [(f"--workers {w}", ["--workers", str(w)]) for w in args.workers]
    before = run_audit(args.before, home, []) if args.before else None
    reports = set()
    for label, extra in [("default", []), *runs]:
        after = run_audit(HERE.parent, home, extra)
        reports.add(after["report"])
        line = (
            f"  tune admin audit ({label}): {after['seconds']:.2f}s, peak RSS {after['peak_rss_mb']:.0f} MB"
            f" (largest worker {after['worker_rss_mb']:.0f} MB), exit {after['code']}"
        )
        if before is not None:
            line += (
                f"; before: {before['seconds']:.2f}s, {before['peak_rss_mb']:.0f} MB: "
                f"{before['seconds'] / after['seconds']:.2f}x faster, "
                f"{before['peak_rss_mb'] / after['peak_rss_mb']:.2f}x less memory"
            )
        print(line)
    if before is not None and before["report"] not in reports:
        print("  NOTE: the older code printed another report")
    if len(reports) != 1:
        raise SystemExit("the audits with other --workers printed different reports")
    print(f"  {after['last_line']}")
    print(f"  audit per job: {after['seconds'] / jobs * 1e3:.3f} ms (the same report from every run)")


if __name__ == "__main__":
    main()
