"""Failed logins earn a backoff per account and per address (429 + Retry-After), logged; 401s carry
``WWW-Authenticate``."""

from __future__ import annotations

from typing import Any

import pytest

from api.services import AccountService
from api.throttle import LoginThrottle
from domain.errors import RateLimited
from tests.api.conftest import Api, User


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(api: Api) -> Clock:
    clock = Clock()
    api.client.app.state.login_throttle.clock = clock
    return clock


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "api.login")


def login(api: Api, email: str, password: str) -> Any:
    return api.client.post("/auth/login", json={"email": email, "password": password})


def test_a_hundred_wrong_passwords_close_the_account_even_to_the_right_one(
    api: Api, ann: User, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="api.login"):
        statuses = [login(api, ann.email, f"guess {i}").status_code for i in range(100)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {401, 429}
    assert statuses.count(401) == 6  # then closed: the other guesses were never tried
    refused = login(api, ann.email, ann.password)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) == 1  # the first closure: 1 s

    [warning] = [r.getMessage() for r in caplog.records if r.name == "api.login"]
    assert ann.email in warning and "testclient" in warning  # the account and the address
    assert "guess" not in caplog.text and ann.password not in caplog.text

    clock.now += 1
    assert login(api, ann.email, "guess again").status_code == 401
    assert int(login(api, ann.email, ann.password).headers["Retry-After"]) == 2  # doubled
    clock.now += 2
    assert login(api, ann.email, ann.password).status_code == 200
    assert login(api, ann.email, "a typo").status_code == 401  # a success starts the count again


def test_the_backoff_grows_to_fifteen_minutes_and_is_forgotten_after_an_hour() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    waits = []
    for _ in range(20):
        throttle.failed("ann@example.com", "10.0.0.1", known_as="ann@example.com")
        try:
            throttle.check("ann@example.com", "10.0.0.2")
        except RateLimited as exc:
            waits.append(exc.retry_after_s)
            clock.now += exc.retry_after_s or 0
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900, 900]
    throttle.failed("ann@example.com", "10.0.0.1", known_as="ann@example.com")
    clock.now += 3601
    throttle.check("ann@example.com", "10.0.0.1")
    throttle.failed("ann@example.com", "10.0.0.1", known_as="ann@example.com")
    throttle.check("ann@example.com", "10.0.0.1")  # counted from 1 again: open


def test_an_unknown_email_is_closed_like_a_known_one(api: Api, ann: User, clock: Clock) -> None:
    """The answers say nothing about which accounts exist."""
    known = [login(api, ann.email, "wrong").status_code for _ in range(7)]
    unknown = [login(api, "nobody@example.com", "wrong").status_code for _ in range(7)]
    assert known == unknown == [401] * 6 + [429]


def test_an_address_guessing_many_accounts_is_closed_for_every_account(
    api: Api, ann: User, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """One wrong password for each of 21 accounts: no account is closed, the address is (20 free)."""
    with caplog.at_level("WARNING", logger="api.login"):
        for i in range(21):
            assert login(api, f"user{i}@example.com", "123456").status_code == 401
    assert "from this address" in warnings_of(caplog) and "an unknown email" in warnings_of(caplog)
    assert "user20@example.com" not in warnings_of(caplog)  # no account has it: maybe a password typed there
    reply = login(api, ann.email, ann.password)
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    # from another address, ann's account is open (the throttle is the app's: one per process)
    accounts = AccountService(api.rt, api.client.app.state.login_throttle)
    assert accounts.login(ann.email, ann.password, "10.0.0.2").user_id == ann.user_id


def test_a_suspended_account_counts_failures_like_a_wrong_password(api: Api, ann: User, clock: Clock) -> None:
    api.rt.platform.suspend_user(ann.user_id, "unpaid bills", api.rt.clock())
    api.rt.committed("platform")
    statuses = [login(api, ann.email, ann.password).status_code for _ in range(7)]
    assert statuses == [401] * 6 + [429]


def test_every_401_carries_a_bearer_challenge(api: Api, ann: User) -> None:
    missing = api.client.get("/billing/usage")
    bad = api.client.get("/billing/usage", headers={"Authorization": "Bearer not-a-jwt"})
    wrong = login(api, ann.email, "wrong")
    assert missing.status_code == bad.status_code == wrong.status_code == 401
    assert missing.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"] == 'Bearer realm="tune"'
    assert bad.headers["WWW-Authenticate"] == 'Bearer realm="tune", error="invalid_token"'
