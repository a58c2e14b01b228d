"""Every failure is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cyclopts import App

from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError, format_error, run
from tests.cli.fake_api import FakeApi, Reply

ROOT = Path(__file__).resolve().parents[2]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_format_error_is_one_line_with_where_and_status() -> None:
    err = CliError("no such\njob", code="not_found", where="job_id", status=404)
    assert format_error(err) == "no such job (where: job_id; not_found HTTP 404)"
    assert format_error(CliError("plain")) == "plain"


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (CliError("boom", where="x"), EXIT_ERROR, "tune: error: boom (where: x)"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "tune: error: interrupted"),
        (FileNotFoundError(2, "No such file or directory", "data.jsonl"), EXIT_ERROR, "data.jsonl"),
    ],
)
def test_run_maps_failures_to_exit_codes(exc: BaseException, code: int, text: str, capsys) -> None:
    app = App(name="t", suppress_keyboard_interrupt=False)

    @app.default
    def fail() -> None:
        raise exc

    assert run(app, []) == code
    assert text in _one_line(capsys.readouterr().err)


def test_usage_error_exits_2(run_cli) -> None:
    result = run_cli("tune", "status")
    assert result.code == EXIT_USAGE
    assert "--job-id" in _one_line(result.err)
    result = run_cli("tune", "lst")
    assert result.code == EXIT_USAGE
    assert 'Did you mean "list"' in _one_line(result.err)


def test_not_logged_in(run_cli, cli_env) -> None:
    result = run_cli("tune", "list")
    assert result.code == EXIT_ERROR
    assert "run `tune login`" in _one_line(result.err)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused(run_cli, monkeypatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("TUNE_API_URL", url)
    result = run_cli("tune", "login", "--email", "a@b.c", "--password", "x")
    assert result.code == EXIT_ERROR
    line = _one_line(result.err)
    assert f"cannot reach the API at {url}" in line and "connection refused" in line


def test_4xx_shows_server_message_and_where(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/job_x/status", Reply.error(404, "not_found", "no such job", "job_id"))
    result = run_cli("tune", "status", "--job-id", "job_x")
    assert result.code == EXIT_ERROR
    assert _one_line(result.err) == "tune: error: no such job (where: job_id; not_found HTTP 404)"


def test_wrong_password_does_not_suggest_the_login_just_run(fake_api: FakeApi, run_cli) -> None:
    result = run_cli("tune", "login", "--email", "ann@example.com", "--password", "wrong")
    assert result.code == EXIT_ERROR
    line = _one_line(result.err)
    assert "wrong email or password" in line and "HTTP 401" in line
    assert "tune login" not in line


def test_a_refused_token_points_at_login(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/fine-tune/u_1/list", Reply.error(401, "unauthenticated", "token expired"))
    result = run_cli("tune", "list")
    assert result.code == EXIT_ERROR
    assert _one_line(result.err) == (
        "tune: error: token expired; run `tune login` (unauthenticated HTTP 401)"
    )


def test_server_crash_page_is_one_line(logged_in: FakeApi, run_cli) -> None:
    logged_in.route("GET", "/billing/usage", Reply(500, b"Internal Server Error\n<html>...</html>\n"))
    result = run_cli("tune", "billing")
    assert result.code == EXIT_ERROR
    assert _one_line(result.err) == "tune: error: Internal Server Error (HTTP 500)"


# What Python installs at start when SIGINT is not ignored: a terminal's Ctrl-C raises KeyboardInterrupt.
CTRL_C_AS_IN_A_TERMINAL = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from cli.tune import main; main()"
)


def test_ctrl_c_during_a_stream_is_one_line(logged_in: FakeApi, cli_env: Path) -> None:
    """A real process following logs gets SIGINT: exit 130, one line, no traceback.

    Every step waits on an event: the server holds the stream open until the test ends, the
    signal is sent once the child printed the first line, and the child handles SIGINT as in a
    terminal whatever this process inherited (a suite started in the background of a
    non-interactive shell ignores SIGINT, and so did the child: it never exited).
    """
    released = threading.Event()

    def held_log(_req):
        def body():
            yield b"step 1\n"
            released.wait()

        return Reply(200, body(), {"Content-Type": "text/plain"})

    logged_in.route("GET", "/fine-tune/job_1/logs", held_log)
    env = {**os.environ, "TUNE_API_URL": logged_in.url}
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, "logs", "--job-id", "job_1", "--follow"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "step 1\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)  # a bound on a hang, not a wait: it exits at once
    finally:
        released.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_INTERRUPTED
    assert _one_line(err) == "tune: error: interrupted"
