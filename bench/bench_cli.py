"""Bench: wall time of ``tune --help`` (goal <= 0.3 s), as a ratio to ``python -c pass``.

Both are measured here, in the same run, as fresh interpreter processes
(median of N runs after one warm-up each). Also checks that ``--help`` left
torch, transformers and httpx unimported. Exits 1 if it did, or if the goal was
missed (not with ``--smoke``: one run on a shared machine says nothing of the goal).

    .venv/bin/python bench/bench_cli.py [--runs 15]
    .venv/bin/python bench/bench_cli.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from smoke import parse_args

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.3
HELP = "import sys; from cli.tune import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
PROBE = HELP + (
    "heavy = sorted(m for m in ('torch', 'transformers', 'httpx', 'api') if m in sys.modules)\n"
    "print(','.join(heavy), file=sys.stderr)\n"
)


def _time(code: str, runs: int) -> float:
    cmd = [sys.executable, "-c", code]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)  # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parse_args(parser, runs=1)
    baseline = _time("pass", args.runs)
    help_s = _time(HELP, args.runs)
    heavy = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stderr.strip()
    print(f"python -c pass : {baseline * 1000:7.1f} ms (median of {args.runs})")
    print(f"tune --help    : {help_s * 1000:7.1f} ms (median of {args.runs})")
    print(f"ratio          : {help_s / baseline:7.2f} x baseline")
    print(f"goal           : <= {GOAL_S * 1000:.0f} ms -> {'met' if help_s <= GOAL_S else 'MISSED'}")
    print(f"heavy modules imported by --help: {heavy or 'none'}")
    return 0 if (help_s <= GOAL_S or args.smoke) and not heavy else 1


if __name__ == "__main__":
    raise SystemExit(main())
