"""``tune serve`` on an empty home: default prices, the base-model catalogue and a first admin, once."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from api.app import create_app
from roles.bootstrap import bootstrap, login_hint
from runtime.context import Runtime
from tests.api.conftest import make_settings


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
