"""``tune status --follow``: a line per change, not per heartbeat; a live footer in a terminal."""

from __future__ import annotations

import itertools
import json
import re
import sys

import pytest

from tests.cli.fake_api import FakeApi, Reply

STEPS = 6
LINE = re.compile(r"\d{2}:\d{2}:\d{2} job_a  ")  # a change line, not the footer (no time)


def _heartbeats(status: str, step: int, polls: int, clock: itertools.count) -> list[dict]:
    """``polls`` statuses in which only the heartbeat figures move (GPU time, cost, timestamps)."""
    out = []
    for _ in range(polls):
        tick = next(clock)
        out.append(
            {
                "status": status,
                "step": step,
                "total_steps": STEPS,
                "epoch": step / STEPS,
                "loss": 2.0 / (step + 1) if step else None,
                "tokens": 100 * tick,
                "gpu_metrics": {"gpu_type": "cpu", "gpu_count": 1, "gpu_ms": 700 * tick},
                "cost_usd_micros": 3 * tick,
                "cost": str(3 * tick / 1e6),
                "last_heartbeat_at": f"2026-03-14T10:00:{tick % 60:02d}Z",
                "position": tick,
            }
        )
    return out


def _six_step_job() -> list[dict]:
    """99 polls of a 6-step job, as a server answers them at every heartbeat: 9 real changes."""
    clock = itertools.count(1)
    polls = [{"status": "queued", "total_steps": None}] * 3
    polls += _heartbeats("running", 0, 5, clock)
    for step in range(1, STEPS + 1):
        polls += _heartbeats("running", step, 15, clock)
    done = dict(polls[-1], status="succeeded", model_id="mdl_1")
    return [*polls, done]


def _route(api: FakeApi, polls: list[dict]) -> None:
    replies = iter(polls)
    api.route("GET", "/fine-tune/job_a/status", lambda _r: Reply.json(next(replies, polls[-1])))


def test_follow_prints_changes_not_heartbeats(logged_in: FakeApi, run_cli) -> None:
    polls = _six_step_job()
    assert len(polls) == 99
    _route(logged_in, polls)
    result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 9, result.out  # queued, step 0..6, succeeded
    assert "queued" in lines[0]
    assert [f"step {k}/{STEPS}" in line for k, line in enumerate(lines[1:8])] == [True] * 7
    assert "succeeded" in lines[-1] and "cost $0.000" in lines[-1]


def test_follow_json_prints_one_document_per_change(logged_in: FakeApi, run_cli) -> None:
    _route(logged_in, _six_step_job())
    result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0", "--json")
    assert result.code == 0, result.err
    docs = [json.loads(line) for line in result.out.splitlines()]
    assert [(d["status"], d["step"]) for d in docs] == [
        ("queued", 0),
        *(("running", k) for k in range(STEPS + 1)),
        ("succeeded", STEPS),
    ]


def test_heartbeats_alone_print_at_most_one_line_per_quiet_interval(
    logged_in: FakeApi, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long step still shows its cost growing, once per QUIET_S (30 s), not at every heartbeat."""
    import cli.follow

    seconds = itertools.count(10, 10)  # each poll 10 s after the last
    monkeypatch.setattr(cli.follow, "_clock", lambda: next(seconds))
    polls = _heartbeats("running", 1, 12, itertools.count(1))
    polls += [polls[-1]] * 6  # no heartbeat at all: nothing to say, however long
    polls.append(dict(polls[-1], status="failed", error="out of memory"))
    _route(logged_in, polls)
    result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0")
    assert result.code == 1
    lines = result.out.strip().splitlines()
    # polls every 10 s: the first line, new figures at 40, 70, 100 and 130 s (the last heartbeat's),
    # then nothing new to say until the job fails
    assert [re.search(r"cost (\S+)", line).group(1) for line in lines] == [
        "$0.000003", "$0.000012", "$0.000021", "$0.00003", "$0.000036", "$0.000036"
    ]  # fmt: skip
    assert "failed" in lines[-1] and "error: out of memory" in lines[-1]


def test_follow_in_a_terminal_keeps_change_lines_under_a_live_footer(
    logged_in: FakeApi, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    import cli.output

    monkeypatch.setattr(
        cli.output, "stdout_console", lambda: Console(file=sys.stdout, force_terminal=True, width=120)
    )
    _route(logged_in, _six_step_job())
    result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0")
    assert result.code == 0, result.err
    assert len(LINE.findall(result.out)) == 9  # the same change lines as in a pipe
    assert "\x1b[" in result.out and "━" in result.out  # the live footer and its step bar


def test_follow_says_what_a_job_is_busy_with_before_its_first_step(logged_in: FakeApi, run_cli) -> None:
    busy = "converting base model smollm2-135m (first use), this takes a minute"
    polls = [
        {"status": "running", "total_steps": None, "activity": busy},
        {"status": "running", "step": 1, "total_steps": STEPS},
        {"status": "succeeded", "step": STEPS, "total_steps": STEPS, "model_id": "mdl_1"},
    ]
    _route(logged_in, polls)
    result = run_cli("tune", "status", "--job-id", "job_a", "--follow", "--interval", "0")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert busy in lines[0] and all(busy not in line for line in lines[1:]), result.out
