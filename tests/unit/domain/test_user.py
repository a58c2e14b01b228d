"""Users and the email index: registration rules, suspension, quotas."""

from __future__ import annotations

import pytest

from domain.errors import Conflict, Forbidden, ValidationFailed
from domain.user import DEFAULT_MAX_CONCURRENT_JOBS, User, normalize_email
from domain.user_email import UserEmail
from tests.unit.domain.conftest import at, refused, refused_field


def register(**overrides: str) -> User:
    fields = {
        "user_id": "usr_1",
        "email": " Ada@Example.COM ",
        "password_hash": "$argon2id$x",
        "role": "user",
    }
    fields.update(overrides)
    return User.register(**fields, at=at())


def test_register_stores_a_normalized_email_and_default_quotas() -> None:
    user = register()
    assert (user.email, user.status, user.role) == ("ada@example.com", "active", "user")
    assert user.max_concurrent_jobs == DEFAULT_MAX_CONCURRENT_JOBS
    assert user.id == User.create_id("usr_1")


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"role": "root"}, "role"),
        ({"user_id": "a/b"}, "user_id"),
        ({"password_hash": " "}, "password_hash"),
    ],
)
def test_register_refuses_bad_fields(override: dict[str, str], where: str) -> None:
    assert refused_field(register, override) == where


def test_suspended_users_cannot_log_in_until_reactivated() -> None:
    user = register()
    user.record_login(at(1))
    user.suspend("unpaid invoice", at(2))
    with refused(user, Forbidden, "suspended"):
        user.record_login(at(3))
    with refused(user, Conflict, "already suspended"):
        user.suspend("again", at(3))
    user.reactivate(at(4))
    with refused(user, Conflict, "not suspended"):
        user.reactivate(at(5))
    user.record_login(at(5))
    assert (user.status, user.last_login_at, user.suspended_reason) == ("active", at(5), None)


def test_quota_and_password_changes() -> None:
    user = register()
    user.set_quota(5, 10**9, at(1))
    user.change_password("$argon2id$y", at(2))
    assert (user.max_concurrent_jobs, user.max_dataset_bytes, user.password_hash) == (5, 10**9, "$argon2id$y")
    with refused(user, ValidationFailed, "max_concurrent_jobs"):
        user.set_quota(-1, 10, at(3))


def test_email_index_id_ignores_case() -> None:
    claim = UserEmail.claim(email="Ada@Example.com", user_id="usr_1", at=at())
    assert claim.id == UserEmail.create_id("ada@example.com") == UserEmail.create_id(" ADA@example.COM")
    assert (claim.email, claim.user_id) == ("ada@example.com", "usr_1")
    assert normalize_email("X@Y.Z") == "x@y.z"


def test_suspension_and_password_changes_revoke_tokens() -> None:
    user = register()
    assert user.token_version == 0
    user.change_password("$argon2id$y", at(1))
    assert user.token_version == 1
    user.suspend("unpaid invoice", at(2))
    user.reactivate(at(3))  # the tokens revoked by the suspension stay revoked
    user.revoke_tokens("by an operator", at(4))
    assert user.token_version == 3
    revoked = [e for e in user.collect_events() if isinstance(e, User.TokensRevoked)]
    assert [(e.token_version, e.reason) for e in revoked] == [
        (1, "password changed"),
        (2, "suspended"),
        (3, "by an operator"),
    ]
