"""``tune serve`` listens where the other commands look: ``--host``/``--port``, else ``TUNE_API_URL``.

The server itself is started from ``TUNE_API_URL`` alone by ``tests/cli/test_live.py``'s fixture.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli.errors import CliError
from cli.serve import listen_address
from tests.emulators import free_port


@pytest.mark.parametrize(
    ("url", "host", "port", "expected"),
    [
        ("http://127.0.0.1:8600", None, None, ("127.0.0.1", 8600, "--api-url / TUNE_API_URL")),
        ("http://127.0.0.1:9123", None, None, ("127.0.0.1", 9123, "--api-url / TUNE_API_URL")),
        ("http://localhost", None, None, ("localhost", 80, "--api-url / TUNE_API_URL")),
        ("http://[::1]:9000", None, None, ("::1", 9000, "--api-url / TUNE_API_URL")),
        ("http://127.0.0.1:9123", "0.0.0.0", None, ("0.0.0.0", 9123, "--api-url / TUNE_API_URL")),
        ("http://127.0.0.1:9123", None, 7000, ("127.0.0.1", 7000, "--port")),
        ("http://127.0.0.1:9123", "::", 7000, ("::", 7000, "--port")),
        ("https://tune.example.com", "0.0.0.0", 8600, ("0.0.0.0", 8600, "--port")),
    ],
)
def test_explicit_options_win_then_the_api_url(url, host, port, expected) -> None:
    assert listen_address(url, host, port) == expected


def test_an_https_url_names_a_proxy_not_the_server() -> None:
    with pytest.raises(CliError, match=r"plain HTTP.*--host and --port") as err:
        listen_address("https://tune.example.com", None, None)
    assert err.value.where == "--api-url / TUNE_API_URL"



@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, cli_env: Path) -> list[tuple[str, int]]:
    """Where ``tune serve`` would run the server (the embedded server is replaced by a recorder)."""
    import roles.embedded

    calls: list[tuple[str, int]] = []
    monkeypatch.setenv("TUNE_HOME", str(cli_env / "home"))
    monkeypatch.delenv("TUNE_BUCKET", raising=False)
    monkeypatch.setattr(roles.embedded, "serve", lambda _s, *, host, port, **_: calls.append((host, port)))
    return calls


def test_serve_listens_on_tune_api_url(run_cli, served, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("TUNE_API_URL", f"http://127.0.0.1:{port}/")
    result = run_cli("tune", "serve")
    assert result.code == 0, result.err
    assert served == [("127.0.0.1", port)]
    assert f"API on http://127.0.0.1:{port}" in result.err
    other = free_port()
    assert run_cli("tune", "serve", "--port", str(other)).code == 0  # an explicit --port wins
    assert run_cli("tune", "--api-url", f"http://localhost:{port}", "serve").code == 0
    assert served[1:] == [("127.0.0.1", other), ("localhost", port)]


def test_a_busy_tune_api_url_port_is_refused_by_name(run_cli, served, monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("TUNE_API_URL", f"http://127.0.0.1:{port}")
        result = run_cli("tune", "serve")
    assert result.code == 1 and not served
    assert f"cannot listen on 127.0.0.1:{port}" in result.err
    assert "where: --api-url / TUNE_API_URL" in result.err
