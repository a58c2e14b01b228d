"""``tune serve`` on an empty home: default prices, the base-model catalogue and a first admin, once;
its password reaches no log, and the home is private."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.services.accounts import FIRST_EMAIL, FirstUser
from roles.bootstrap import PASSWORD_FILE, bootstrap, hand_over, login_hint
from runtime.context import Runtime
from tests.api.conftest import chat_lines, make_settings


def test_bootstrap_makes_a_first_admin_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    first = bootstrap(runtime)
    assert first is not None and first.email and len(first.password) >= 12
    assert bootstrap(runtime) is None
    assert bootstrap(Runtime(settings)) is None  # a restart finds the user in the bucket
    hint = login_hint(first, "http://127.0.0.1:8600")
    assert first.password in hint and "tune --api-url http://127.0.0.1:8600 login" in hint
    with TestClient(create_app(settings, runtime=runtime)) as client:
        reply = client.post("/auth/login", json={"email": first.email, "password": first.password})
        assert reply.status_code == 200 and reply.json()["role"] == "admin"
        headers = {"Authorization": f"Bearer {reply.json()['token']}"}
        prices = client.get("/billing/pricing", headers=headers).json()["prices"]
        assert {"cpu", "h200"} <= set(prices)
    assert "tiny-llama" in runtime.base_model_names()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_first_password_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    first = FirstUser("usr_1", "admin@localhost.localdomain", "0123456789abcdef01234567")
    terminal = Terminal()
    assert hand_over(first, "http://127.0.0.1:8600", tmp_path / "home", terminal) is None
    assert first.password in terminal.getvalue()
    assert not (tmp_path / "home" / PASSWORD_FILE).exists()


def test_without_a_terminal_the_first_password_goes_to_a_private_file(tmp_path: Path) -> None:
    first = FirstUser("usr_1", "admin@localhost.localdomain", "0123456789abcdef01234567")
    log = io.StringIO()  # `tune serve > serve.log`, a journal: no terminal
    path = hand_over(first, "http://127.0.0.1:8600", tmp_path / "home", log)
    assert path == tmp_path / "home" / PASSWORD_FILE
    assert path.read_text() == first.password + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = log.getvalue()
    assert first.password not in text
    assert str(path) in text and f"login --email {first.email} < {path}" in text


def test_serve_keeps_the_password_out_of_its_log_and_the_fresh_home_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tune serve`` on a new home, its output captured (no terminal): then a login, an upload, a job.

    Every folder of the home is 0700 and every file 0600, whatever the umask it was started with.
    """
    import roles.embedded as embedded

    class NoWorkers:
        def __init__(self, runtime: Runtime) -> None: ...
        def start(self) -> None: ...
        def close(self) -> None: ...

    served: list[Any] = []
    monkeypatch.setattr(embedded, "EmbeddedWorkers", NoWorkers)
    monkeypatch.setattr(embedded, "run_granian", lambda app, **_: served.append((app, os.umask(0o077))))
    old_umask = os.umask(0o022)
    home = tmp_path / "home"
    # serve's stderr, not a terminal; a stream that stays open: the app's log handlers keep it
    monkeypatch.setattr(sys, "stderr", stderr := io.StringIO())
    try:
        settings = make_settings(home, jwt_secret=None)  # the API generates and keeps one
        runtime = Runtime(settings)
        embedded.serve(settings, runtime=runtime)
    finally:
        os.umask(old_umask)
    [(app, umask)] = served
    assert umask == 0o077  # what the runner children inherit
    err = stderr.getvalue()
    password = (home / PASSWORD_FILE).read_text().strip()
    assert password and password not in err and str(home / PASSWORD_FILE) in err

    os.umask(0o022)
    try:
        with TestClient(app) as client:
            reply = client.post("/auth/login", json={"email": FIRST_EMAIL, "password": password})
            assert reply.status_code == 200, reply.text
            headers = {"Authorization": f"Bearer {reply.json()['token']}"}
            user_id = reply.json()["user_id"]
            uploaded = client.post(
                f"/datasets/{user_id}/upload",
                params={"filename": "train.jsonl"},
                content=chat_lines(),
                headers={**headers, "Content-Type": "application/octet-stream"},
            )
            assert uploaded.status_code == 201, uploaded.text
            started = client.post(
                f"/fine-tune/{user_id}/start",
                json={"base_model": "tiny-llama", "dataset_id": uploaded.json()["dataset_id"]},
                headers=headers,
            )
            assert started.status_code == 201, started.text
    finally:
        os.umask(old_umask)
    found = {p.relative_to(home) for p in home.rglob("*")}
    assert Path("jwt_secret") in found and Path(PASSWORD_FILE) in found
    assert any(p.parts[:2] == ("bucket", "users") and p.name == "train.jsonl" for p in found)
    wrong = {
        str(p.relative_to(home)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in [home, *home.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    }
    assert wrong == {}
