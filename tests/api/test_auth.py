"""Login, tokens with expiry, argon2 hashes, and which routes need a token."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from api.auth import jwt_secret_of, load_or_create_secret
from runtime.settings import Settings
from tests.api.conftest import SECRET, Api, User


def test_login_returns_a_bearer_token_with_expiry(api: Api, ann: User) -> None:
    reply = api.client.post("/auth/login", json={"email": ann.email, "password": ann.password})
    assert reply.status_code == 200
    body = reply.json()
    assert body["user_id"] == ann.user_id and body["token_type"] == "bearer"
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == ann.user_id
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert abs(expires.timestamp() - claims["exp"]) <= 2
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(days=1)


def test_login_is_case_insensitive_on_the_email(api: Api, ann: User) -> None:
    reply = api.client.post("/auth/login", json={"email": ann.email.upper(), "password": ann.password})
    assert reply.status_code == 200


@pytest.mark.parametrize("which", ["password", "email"])
def test_wrong_credentials_answer_401_without_saying_which(api: Api, ann: User, which: str) -> None:
    body = {"email": ann.email, "password": ann.password, which: "nobody@example.com"}
    reply = api.client.post("/auth/login", json=body)
    assert reply.status_code == 401
    assert reply.json()["error"]["message"] == "wrong email or password"


def test_passwords_are_stored_as_argon2_hashes_only(api: Api, ann: User) -> None:
    stored = b"".join(api.rt.bucket.read(n) for n in api.rt.bucket.list("platform/events/"))
    assert ann.password.encode() not in stored
    assert b"$argon2id$" in stored


def test_protected_routes_need_a_token(api: Api, ann: User) -> None:
    for path in (f"/fine-tune/{ann.user_id}/list", "/billing/usage", "/models/m1"):
        reply = api.client.get(path)
        assert reply.status_code == 401, path
        assert reply.json()["error"]["code"] == "unauthenticated"


def test_public_routes_need_none(api: Api) -> None:
    assert api.client.get("/health").json()["status"] == "ok"
    assert api.client.get("/schema/openapi.json").status_code == 200


def test_an_expired_or_forged_token_is_refused(api: Api, ann: User) -> None:
    now = datetime.now(UTC)
    expired = jwt.encode(
        {"sub": ann.user_id, "exp": now - timedelta(seconds=5), "iat": now - timedelta(hours=1)}, SECRET
    )
    forged = jwt.encode({"sub": ann.user_id, "exp": now + timedelta(hours=1), "iat": now}, "another secret")
    for token in (expired, forged, "not-a-jwt"):
        reply = api.client.get("/billing/usage", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 401
        assert set(reply.json()["error"]) == {"code", "message", "where"}


def test_a_suspended_user_is_locked_out_at_once(api: Api, ann: User) -> None:
    assert api.client.get("/billing/usage", headers=ann.headers).status_code == 200
    api.rt.platform.suspend_user(ann.user_id, "unpaid bills", api.rt.clock())
    api.rt.committed("platform")
    assert api.client.get("/billing/usage", headers=ann.headers).status_code == 401
    logged_in = api.rt.platform.get_user(ann.user_id).last_login_at
    right = api.client.post("/auth/login", json={"email": ann.email, "password": ann.password})
    wrong = api.client.post("/auth/login", json={"email": ann.email, "password": "not it"})
    assert right.status_code == wrong.status_code == 401
    assert right.json() == wrong.json()  # the right password is not confirmed
    assert right.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
    assert api.rt.platform.get_user(ann.user_id).last_login_at == logged_in  # no login recorded


def test_login_is_recorded(api: Api, ann: User) -> None:
    info = api.rt.platform.get_user(ann.user_id)
    assert info.last_login_at is not None


def test_jwt_secret_is_generated_once_with_mode_0600(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNE_JWT_SECRET", raising=False)
    monkeypatch.delenv("TUNE_BUCKET", raising=False)
    first = jwt_secret_of(Settings.from_env())
    again = jwt_secret_of(Settings.from_env())
    path = tmp_path / "home" / "jwt_secret"
    assert first == again == load_or_create_secret(tmp_path / "home")
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Settings.from_env().bucket_url == f"file://{tmp_path / 'home' / 'bucket'}"


def test_env_secret_wins_and_bad_numbers_are_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_HOME", str(tmp_path))
    monkeypatch.setenv("TUNE_JWT_SECRET", "from-the-env")
    assert jwt_secret_of(Settings.from_env()) == "from-the-env"
    assert not (tmp_path / "jwt_secret").exists()
    monkeypatch.setenv("TUNE_RATE_LIMIT", "lots")
    with pytest.raises(ValueError, match="TUNE_RATE_LIMIT"):
        Settings.from_env()


def test_a_remembered_token_still_expires(api: Api, ann: User) -> None:
    """A token verified (and remembered) before its expiry is refused after it.

    Expiry is the one thing here that is time: the test waits for it, and never bets that two
    requests finish within a lifetime. When a loaded machine let the token expire before both
    were answered (a refusal that came after the expiry), it tries again with a longer lifetime.
    """
    for lifetime_s in (2, 8, 32):
        now = datetime.now(UTC)
        expires = (now + timedelta(seconds=lifetime_s)).replace(microsecond=0)  # a JWT's exp is whole
        token = jwt.encode({"sub": ann.user_id, "exp": expires, "iat": now}, SECRET)
        headers = {"Authorization": f"Bearer {token}"}
        verified = api.client.get("/billing/usage", headers=headers).status_code
        remembered = api.client.get("/billing/usage", headers=headers).status_code
        if (verified, remembered) == (200, 200):
            break
        assert datetime.now(UTC) >= expires, f"refused before it expired: {verified}, {remembered}"
    else:
        pytest.fail("no token lived long enough to be used twice")
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert api.client.get("/billing/usage", headers=headers).status_code == 401


def test_a_token_is_remembered_per_secret(tmp_path, api: Api, ann: User) -> None:
    """The same token string must not pass an app with another secret because this one verified it."""
    from litestar.testing import TestClient

    from api.app import create_app
    from runtime.context import Runtime
    from tests.api.conftest import make_settings

    assert api.client.get("/billing/usage", headers=ann.headers).status_code == 200
    assert api.settings.home == tmp_path  # the same bucket: ann exists there too
    other = make_settings(tmp_path, jwt_secret="a-different-secret-0123456789abcdef")
    with TestClient(create_app(other, runtime=Runtime(other))) as client:
        login = client.post("/auth/login", json={"email": ann.email, "password": ann.password})
        assert login.status_code == 200  # ann is a user of this app as well
        assert client.get("/billing/usage", headers=ann.headers).status_code == 401


def _still_works(api: Api, headers: dict[str, str]) -> bool:
    reply = api.client.get("/billing/usage", headers=headers)
    assert reply.status_code in (200, 401), reply.text
    return reply.status_code == 200


def test_a_password_change_revokes_the_tokens_issued_before(api: Api, ann: User) -> None:
    from api.auth import hash_password

    other_session = api.login(ann.email, ann.password)
    api.rt.platform.change_password(ann.user_id, hash_password("a new password"), api.rt.clock())
    api.rt.committed("platform")
    assert not _still_works(api, ann.headers) and not _still_works(api, other_session)
    refused = api.client.get("/billing/usage", headers=ann.headers)
    assert "log in again" in refused.json()["error"]["message"]
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="tune", error="invalid_token"'
    fresh = api.login(ann.email, "a new password")
    token = fresh["Authorization"].split()[1]
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["extras"]["token_version"] == 1
    assert _still_works(api, fresh)


def test_tokens_revoked_by_a_suspension_stay_revoked_after_reactivation(api: Api, ann: User) -> None:
    api.rt.platform.suspend_user(ann.user_id, "unpaid bills", api.rt.clock())
    api.rt.platform.reactivate_user(ann.user_id, api.rt.clock())
    api.rt.committed("platform")
    assert not _still_works(api, ann.headers)
    assert _still_works(api, api.login(ann.email, ann.password))


def test_an_operator_revokes_one_users_tokens(api: Api, ann: User, bob: User) -> None:
    api.rt.platform.revoke_tokens(ann.user_id, "laptop stolen", api.rt.clock())
    api.rt.committed("platform")
    assert not _still_works(api, ann.headers)
    assert _still_works(api, bob.headers)


def test_a_token_without_a_version_counts_as_version_0(api: Api, ann: User) -> None:
    """Tokens issued before versions existed keep working until the user's tokens are revoked."""
    now = datetime.now(UTC)
    claims = {"sub": ann.user_id, "exp": now + timedelta(hours=1), "iat": now, "extras": {"role": "user"}}
    old = {"Authorization": f"Bearer {jwt.encode(claims, SECRET)}"}
    assert _still_works(api, old)
    api.rt.platform.revoke_tokens(ann.user_id, "by an operator", api.rt.clock())
    api.rt.committed("platform")
    assert not _still_works(api, old)
