"""Fixtures: an isolated CLI environment, the CLIs run in-process, a fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.fake_api import FakeApi, Reply


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config and cache in tmp_path; no inherited server URL or password; wide terminal."""
    monkeypatch.setenv("TUNE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("TUNE_API_URL", "TUNE_PASSWORD", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run_cli(cli_env: Path, capsys: pytest.CaptureFixture[str]):
    """``run_cli("tune", "list", "--json") -> Result`` through the real ``main()``."""
    from cli import dataset, model, tune

    mains = {"tune": tune.main, "model": model.main, "dataset": dataset.main}

    def run(prog: str, *args: str) -> Result:
        capsys.readouterr()
        try:
            mains[prog](list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


LOGIN = {
    "token": "tok-123",
    "user_id": "u_1",
    "email": "ann@example.com",
    "role": "user",
    "expires_at": "2999-01-01T00:00:00Z",
}


@pytest.fixture
def fake_api(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """A fake API on a free port, with TUNE_API_URL pointing at it and a login route."""
    with FakeApi() as api:
        monkeypatch.setenv("TUNE_API_URL", api.url)
        api.route(
            "POST",
            "/auth/login",
            lambda r: (
                Reply.json(LOGIN)
                if r.json() == {"email": "ann@example.com", "password": "pw"}
                else Reply.error(401, "unauthenticated", "wrong email or password")
            ),
        )
        yield api


@pytest.fixture
def logged_in(fake_api: FakeApi, run_cli) -> FakeApi:
    result = run_cli("tune", "login", "--email", "ann@example.com", "--password", "pw")
    assert result.code == 0, result.err
    return fake_api
