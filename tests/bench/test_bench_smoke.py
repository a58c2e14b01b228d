"""Every bench in ``bench/`` runs at its ``--smoke`` size and prints its ratio lines, so a bench
that no longer runs fails here, not when someone next wants its figures.

Each runs as ``python bench/NAME.py --smoke`` in a child process with the tests' environment,
``$BENCH_DIR`` in ``tmp_path`` and the session's emulators (``STORAGE_EMULATOR_HOST``,
``PUBSUB_EMULATOR_HOST``, which the benches use rather than start their own). Only the exit
status and the number of ratio lines (``0.93x``, ``1.000 x baseline``) are checked: a smoke run's
figures mean nothing, and no timing is asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"\d+\.\d+ ?x\b")


def smoke(name: str, tmp_path: Path, *args: str, timeout: float = 300) -> list[str]:
    """Run ``bench/<name>.py --smoke``; its ratio lines (the test fails if it exits non-zero)."""
    output = smoke_output(name, tmp_path, *args, timeout=timeout)
    return [line for line in output.splitlines() if RATIO.search(line)]


def smoke_output(name: str, tmp_path: Path, *args: str, timeout: float = 300) -> str:
    """Run ``bench/<name>.py --smoke``; all it printed (the test fails if it exits non-zero)."""
    env = {**os.environ, "BENCH_DIR": str(tmp_path / "bench"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} --smoke exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_bench_bucket(tmp_path: Path, fake_gcs: str) -> None:
    lines = smoke("bench_bucket", tmp_path)
    assert len(lines) == 6 and "GcsBucket racing" in lines[-1], lines


def test_bench_eventstore(tmp_path: Path, fake_gcs: str) -> None:
    output = smoke_output("bench_eventstore", tmp_path)
    lines = [line for line in output.splitlines() if RATIO.search(line)]
    assert re.search(r"signatures \(Ed25519, per commit\): sign [\d.]+ us, verify [\d.]+ us", output)
    # 4 + 4 + 4 saves (one thread, 100 events, 8 threads), 5 replays, 3 x 2 saves (1 process, several), the
    # headline
    assert len(lines) == 24 and "GcsBucket" in lines[-2] and "2 processes" in lines[-2], lines
    assert lines[-1].startswith("durable vs durable") and "100-event saves" in lines[-1], lines


def test_bench_replay(tmp_path: Path) -> None:
    output = smoke_output("bench_replay", tmp_path)
    lines = [line.strip() for line in output.splitlines() if line.startswith("  ")]
    assert [line.split("  ")[0] for line in lines] == [
        "memory (POPO recorder)", "SQLite recorder (file)", "LocalBucket, verdicts kept (warm)",
        "LocalBucket, no verdict (cold)", "verification (cold - warm)"], lines  # warm, cold, their cost: rows
    assert all(re.search(r"[\d.]+x SQLite$", line) for line in lines[2:4]), lines
    assert re.search(r"us an event, [\d.]+ ms a segment .* one Ed25519 check \d+ us$", lines[4]), lines


def test_bench_api(tmp_path: Path) -> None:
    lines = smoke("bench_api", tmp_path)  # wrk if installed, else the Python client
    assert len(lines) == 3, lines


def test_bench_history(tmp_path: Path) -> None:
    lines = smoke("bench_history", tmp_path)  # no --before: only the size against size line
    assert len(lines) == 1 and "projector per change" in lines[0], lines


def test_bench_cli(tmp_path: Path) -> None:
    lines = smoke("bench_cli", tmp_path)  # exits 1 if --help imported torch & co
    assert len(lines) == 1 and "x baseline" in lines[0], lines


def test_bench_estimate(tmp_path: Path) -> None:
    # tiny-llama: a calibrating job and three estimated ones, a trainer process each (20-60 s when busy)
    lines = smoke("bench_estimate", tmp_path, timeout=600)
    assert len(lines) == 4 and "measured from 3 jobs" in lines[-1], lines


def test_bench_heartbeats(tmp_path: Path, pubsub_emulator: str) -> None:
    lines = smoke("bench_heartbeats", tmp_path)
    assert len(lines) == 3 and "Pub/Sub end to end" in lines[-1], lines


def test_bench_ledger(tmp_path: Path, pubsub_emulator: str) -> None:
    lines = smoke("bench_ledger", tmp_path)
    assert len(lines) == 4, lines  # ledger / baseline: alone and with a projector, direct and Pub/Sub


@pytest.mark.slow
def test_bench_trainer(tmp_path: Path) -> None:
    lines = smoke("bench_trainer", tmp_path, "--cache", str(tmp_path / "base-models"))
    assert len(lines) == 2, lines  # wall time and CPU time


def test_every_bench_has_a_smoke_test() -> None:
    benches = {path.stem for path in (ROOT / "bench").glob("bench_*.py")}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_bench_")}
    assert benches == tested


def test_bench_serving(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    lines = smoke("bench_serving", tmp_path)
    assert len(lines) == 2 and "resident / naive requests/s" in lines[0], lines


def test_bench_audit(tmp_path: Path) -> None:
    output = smoke_output("bench_audit", tmp_path)
    assert re.search(
        r"on disk per job: [\d.]+ KB of file data, [\d.]+ KB of disk blocks, [\d.]+ objects", output
    )
    assert re.search(r"tune admin audit \(--workers 1\): [\d.]+s, peak RSS \d+ MB", output), output
    assert "audited 7 partition(s): all consistent" in output, output  # the platform and 6 users


def test_bench_console(tmp_path: Path) -> None:
    lines = smoke("bench_console", tmp_path)
    assert len(lines) == 2 and lines[0].startswith("job page p99"), lines
    assert lines[1].startswith("billing page p99") and "the usage's" in lines[1], lines


@pytest.mark.slow
def test_bench_topology(tmp_path: Path, pubsub_emulator: str) -> None:
    # the whole topology (fake-gcs-server notifying Pub/Sub, 2 API processes, projector, ledger,
    # dispatcher): 2 users x 3 jobs of the fake trainer (~1-2 min on 2 busy cores)
    output = smoke_output("bench_topology", tmp_path, timeout=600)
    assert "runs ended {'succeeded': 6}" in output, output
    assert re.search(r"view lag, all commits: p50 [\d.]+s p99 [\d.]+s; commits never seen served: 0", output)
    assert re.search(r"heartbeats: (\d+) sent by 6 attempts, \1 metered, 0 lost", output), output
    for role in ("api0", "api1", "projector", "ledger", "dispatcher", "runners"):
        assert re.search(rf"^{role} +[\d.]+ +\d+%$", output, re.MULTILINE), (role, output)
    assert output.count("goal: ") == 3, output


def test_bench_save_cost(tmp_path: Path) -> None:
    output = smoke_output("bench_save_cost", tmp_path)
    cpu = r"store CPU: +SQLite +-?\d+ us; event store +-?\d+ us \(the log -?\d+, of which signing \d+"
    assert re.search(cpu, output), output
    assert re.search(r"durability: SQLite +-?\d+ us; event store +-?\d+ us", output), output
    flush = r"journal flush \((through the anchor|not ext4: no anchor)\): saves \d+\.\d\dx as fast as with"
    lines = [line for line in output.splitlines() if RATIO.search(line)]
    assert len(lines) == 3 and re.match(flush, lines[0]), lines
    assert lines[1].startswith("a pack layout's floor (no file per commit; not built): "), lines
    assert lines[2].startswith("durable 1-event saves: event store"), lines


def test_bench_save_growth(tmp_path: Path) -> None:
    lines = smoke("bench_save_growth", tmp_path)  # a row per size, then the growth line
    assert len(lines) == 3 and lines[-1].startswith("growth from 20 to 60 aggregates"), lines
