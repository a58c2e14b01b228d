"""``python -m projections``: the operator's audit, rebuild and report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from projections.__main__ import main
from storage import LocalBucket


def test_audit_passes_then_fails_on_a_tampered_view_then_rebuild_fixes_it(
    projected: LocalBucket, capsys: pytest.CaptureFixture[str]
) -> None:
    url = projected.root.as_uri()
    assert main(["audit", "--bucket", url]) == 0
    assert "users/u1: chain ok" in capsys.readouterr().out

    name = "users/u1/metadata/jobs.json"
    projected.write(name, projected.read(name).replace(b'"status":"running"', b'"status":"failed"'))
    assert main(["audit", "--bucket", url, "--user", "u1"]) == 1
    assert f"differs    {name} at $.jobs[1].status" in capsys.readouterr().out

    assert main(["rebuild", "--bucket", url, "--user", "u1"]) == 0
    assert f"wrote   {name}" in capsys.readouterr().out
    assert main(["audit", "--bucket", url, "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [(r["partition"], r["ok"]) for r in reports] == [("platform", True), ("users/u1", True)]


def test_monthly_report_as_csv_and_json(projected: LocalBucket, capsys: pytest.CaptureFixture[str]) -> None:
    url = projected.root.as_uri()
    assert main(["report", "--bucket", url, "--user", "u1", "--month", "2024-03"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job_id,gpu_type,gpu_count,seconds,cost_per_hour,cost,")
    assert lines[1:] == [
        "j1,a100-80gb,1,600,2.10,0.35,600000,2100000,350000",
        "j2,a100-80gb,1,600,2.10,0.35,600000,2100000,350000",
    ]
    assert main(["report", "--bucket", url, "--user", "u1", "--month", "2024-03", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total_cost_usd_micros"] == 700_000 and doc["total_cost"] == 0.7 and len(doc["rows"]) == 2


def test_runs_as_a_module(projected: LocalBucket) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "projections", "audit", "--bucket", projected.root.as_uri(), "--user", "u1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "views ok" in done.stdout


def test_audit_and_rebuild_print_every_problem_of_a_broken_log(
    projected: LocalBucket, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: every problem, not only the first, in the lines `tune admin audit` prints."""
    events = "users/u1/events/"
    projected.write(f"{events}000000000002.json", b"[not json")
    projected.write(f"{events}notes.txt", b"stray")
    url = projected.root.as_uri()

    assert main(["audit", "--bucket", url, "--user", "u1"]) == 1
    out = capsys.readouterr().out
    assert "users/u1: CHAIN BROKEN (2 problem(s))" in out
    assert "  users/u1: CHAIN BROKEN: invalid at commit 2: users/u1/events/000000000002.json" in out
    assert "  users/u1: CHAIN BROKEN: stray object users/u1/events/notes.txt: " in out

    name = "users/u1/metadata/jobs.json"
    projected.write(name, b"{}")
    assert main(["rebuild", "--bucket", url]) == 1
    out = capsys.readouterr().out
    assert "users/u1: NOT REBUILT" in out and "platform: head " in out
    assert "  users/u1: CHAIN BROKEN: stray object users/u1/events/notes.txt: " in out
    assert projected.read(name) == b"{}"
