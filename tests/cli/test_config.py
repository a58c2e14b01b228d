"""The token file: where it lives, its permissions, one login per server."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.config import (
    Credentials,
    clear_credentials,
    config_dir,
    credentials_path,
    load_credentials,
    normalize_url,
    save_credentials,
)
from cli.errors import CliError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_file_is_private(cli_env: Path) -> None:
    path = save_credentials("http://127.0.0.1:8600", Credentials(token="secret", user_id="u_1"))
    assert path == cli_env / "config" / "credentials.json"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_rewrite_keeps_mode_even_if_file_was_widened(cli_env: Path) -> None:
    path = save_credentials("http://a:1", Credentials(token="t1", user_id="u"))
    path.chmod(0o644)
    save_credentials("http://a:1", Credentials(token="t2", user_id="u"))
    assert _mode(path) == 0o600
    assert load_credentials("http://a:1").token == "t2"


def test_one_login_per_server(cli_env: Path) -> None:
    save_credentials("http://a:1/", Credentials(token="ta", user_id="ua"))
    save_credentials("http://b:2", Credentials(token="tb", user_id="ub"))
    assert load_credentials("http://a:1").token == "ta"  # trailing slash is the same server
    assert load_credentials("http://b:2").user_id == "ub"
    assert load_credentials("http://c:3") is None
    assert clear_credentials("http://a:1") is True
    assert load_credentials("http://a:1") is None
    assert load_credentials("http://b:2").token == "tb"
    assert clear_credentials("http://a:1") is False


def test_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TUNE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "tune"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "tune"


def test_corrupt_file_is_a_clear_error(cli_env: Path) -> None:
    credentials_path().parent.mkdir(parents=True)
    credentials_path().write_text("{not json")
    with pytest.raises(CliError, match="tune login"):
        load_credentials("http://a:1")


def test_bad_url_rejected() -> None:
    with pytest.raises(CliError, match="http://"):
        normalize_url("127.0.0.1:8600")


def test_expiry() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert Credentials(token="t", user_id="u", expires_at="2026-05-31T23:59:59Z").expired(now)
    assert not Credentials(token="t", user_id="u", expires_at="2026-06-01T00:00:01+00:00").expired(now)
    assert not Credentials(token="t", user_id="u").expired(now)
