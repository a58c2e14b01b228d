"""Rate limits per user: past the limit a caller gets 429 in the one error shape; others are unaffected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from api.app import create_app
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from tests.api.conftest import Api, User, make_settings

LIMIT = 5


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(tmp_path, rate_limit_per_minute=LIMIT)
    runtime = Runtime(settings)
    bootstrap(runtime)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        yield Api(settings, runtime, client)


def test_past_the_limit_a_user_gets_429_and_others_do_not(limited: Api) -> None:
    ann, bob = limited.user("ann"), limited.user("bob")  # each login counts against its address
    statuses = [limited.client.get("/billing/pricing", headers=ann.headers).status_code for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT
    reply = limited.client.get("/billing/pricing", headers=ann.headers)
    assert reply.status_code == 429
    assert reply.json()["error"]["code"] == "rate_limited"
    assert "retry in" in reply.json()["error"]["message"]
    assert int(reply.headers["ratelimit-reset"]) > 0
    assert limited.client.get("/billing/pricing", headers=bob.headers).status_code == 200
    assert limited.client.get("/health").status_code == 200  # never limited


def test_logins_are_limited_per_address(limited: Api) -> None:
    body = {"email": "nobody@example.com", "password": "guess"}
    statuses = [limited.client.post("/auth/login", json=body).status_code for _ in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [429]


def test_the_default_api_fixture_is_not_limited(api: Api, ann: User) -> None:
    assert all(api.client.get("/billing/pricing", headers=ann.headers).status_code == 200 for _ in range(50))
