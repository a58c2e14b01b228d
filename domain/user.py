"""A platform user: registration, logins, password, suspension, quotas, revoked tokens (platform partition).

``token_version`` counts revocations: the API puts it in each token it issues and refuses a token
whose version is older than the user's. A suspension and a password change revoke every token
issued before them (``TokensRevoked``, recorded with them); an operator may revoke them alone.
Histories recorded before ``TokensRevoked`` existed have version 0 throughout.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count, check_text
from domain.errors import Conflict, Forbidden, ValidationFailed
from domain.ids import check_id

__all__ = [
    "DEFAULT_MAX_CONCURRENT_JOBS",
    "DEFAULT_MAX_DATASET_BYTES",
    "ROLES",
    "Role",
    "User",
    "UserFields",
    "normalize_email",
]

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = ("user", "admin")
DEFAULT_MAX_CONCURRENT_JOBS = 2
DEFAULT_MAX_DATASET_BYTES = 512 * 1024 * 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    """The stored form of an email: stripped and lower-cased; refuses anything not shaped like one."""
    value = email.strip().lower() if isinstance(email, str) else ""
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValidationFailed(f"not an email address: {email!r:.60}", where="email")
    return value


class UserFields:
    """What a ``User`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    user_id: str
    email: str
    password_hash: str
    role: str
    status: str
    suspended_reason: str | None
    max_concurrent_jobs: int
    max_dataset_bytes: int
    registered_at: datetime
    last_login_at: datetime | None
    updated_at: datetime
    token_version: int


class User(DomainAggregate, UserFields):
    """``status`` is ``active`` or ``suspended``."""

    ID_KIND, ID_KEY = "user", "user_id"

    class Registered(Aggregate.Created):
        user_id: str
        email: str
        password_hash: str
        role: str
        at: datetime

        def apply(self, user: User) -> None:
            user.user_id, user.email, user.password_hash, user.role = (
                self.user_id,
                self.email,
                self.password_hash,
                self.role,
            )
            user.status, user.suspended_reason = "active", None
            user.max_concurrent_jobs = DEFAULT_MAX_CONCURRENT_JOBS
            user.max_dataset_bytes = DEFAULT_MAX_DATASET_BYTES
            user.registered_at = user.updated_at = self.at
            user.last_login_at = None
            user.token_version = 0

    class LoggedIn(Aggregate.Event):
        at: datetime

        def apply(self, user: User) -> None:
            user.last_login_at = self.at

    class PasswordChanged(Aggregate.Event):
        password_hash: str
        at: datetime

        def apply(self, user: User) -> None:
            user.password_hash, user.updated_at = self.password_hash, self.at

    class Suspended(Aggregate.Event):
        reason: str
        at: datetime

        def apply(self, user: User) -> None:
            user.status, user.suspended_reason, user.updated_at = "suspended", self.reason, self.at

    class Reactivated(Aggregate.Event):
        at: datetime

        def apply(self, user: User) -> None:
            user.status, user.suspended_reason, user.updated_at = "active", None, self.at

    class TokensRevoked(Aggregate.Event):
        """Every token issued before is refused from now on (``token_version`` is the new version)."""

        token_version: int
        reason: str
        at: datetime

        def apply(self, user: User) -> None:
            user.token_version, user.updated_at = self.token_version, self.at

    class QuotaSet(Aggregate.Event):
        max_concurrent_jobs: int
        max_dataset_bytes: int
        at: datetime

        def apply(self, user: User) -> None:
            user.max_concurrent_jobs, user.max_dataset_bytes = (
                self.max_concurrent_jobs,
                self.max_dataset_bytes,
            )
            user.updated_at = self.at

    @classmethod
    def register(cls, *, user_id: str, email: str, password_hash: str, role: str, at: datetime) -> User:
        """A new active user. ``password_hash`` is already hashed (argon2 in the API); never a password."""
        check_id(user_id, kind="user_id")
        email = normalize_email(email)
        check_text(password_hash, where="password_hash")
        _check_role(role)
        return cls._create_at(
            cls.Registered, at, user_id=user_id, email=email, password_hash=password_hash, role=role
        )

    def record_login(self, at: datetime) -> None:
        self._check_active("log in")
        self._record(self.LoggedIn, at)

    def change_password(self, password_hash: str, at: datetime) -> None:
        """A new password; the tokens issued with the old one are revoked."""
        check_text(password_hash, where="password_hash")
        self._record(self.PasswordChanged, at, password_hash=password_hash)
        self.revoke_tokens("password changed", at)

    def suspend(self, reason: str, at: datetime) -> None:
        """Refuse logins and revoke every token (a reactivation does not bring them back)."""
        check_text(reason, where="reason")
        if self.status == "suspended":
            raise Conflict(f"user {self.user_id} is already suspended")
        self._record(self.Suspended, at, reason=reason)
        self.revoke_tokens("suspended", at)

    def revoke_tokens(self, reason: str, at: datetime) -> None:
        """Refuse every token issued until now (the user logs in again)."""
        check_text(reason, where="reason")
        self._record(self.TokensRevoked, at, token_version=self.token_version + 1, reason=reason)

    def reactivate(self, at: datetime) -> None:
        if self.status != "suspended":
            raise Conflict(f"user {self.user_id} is not suspended")
        self._record(self.Reactivated, at)

    def set_quota(self, max_concurrent_jobs: int, max_dataset_bytes: int, at: datetime) -> None:
        check_count(max_concurrent_jobs, where="max_concurrent_jobs", minimum=0, maximum=1000)
        check_count(max_dataset_bytes, where="max_dataset_bytes", minimum=0)
        self._record(
            self.QuotaSet, at, max_concurrent_jobs=max_concurrent_jobs, max_dataset_bytes=max_dataset_bytes
        )

    def _check_active(self, verb: str) -> None:
        if self.status != "active":
            raise Forbidden(f"user {self.user_id} is suspended and cannot {verb}", code="suspended")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)} (got {role!r:.20})", where="role")
