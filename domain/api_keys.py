"""A user's API keys: bearer tokens for programs, created, listed and revoked (one aggregate per user).

A key reads ``tsk.<user_id>.<key_id>.<secret>``: the user and key ids say where to look, the
secret (32 random bytes, URL-safe base64) proves it. Only the secret's SHA-256 is stored
(``ApiKeys.KeyCreated.secret_sha256``, in the user's partition): the key is shown once, when it
is created, and never again. A fast hash suffices for a random 256-bit secret (no dictionary to
try, unlike a password), and lets every request be checked in microseconds.

Events: ``ApiKeys.Created(user_id)``, ``KeyCreated(key_id, name, secret_sha256)``,
``KeyRevoked(key_id)``. A revoked key is refused from the next request on; its row stays, so the
list shows when it was revoked. At most ``MAX_ACTIVE_KEYS`` keys are active at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import msgspec
from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_text
from domain.errors import Conflict, Forbidden, NotFound
from domain.ids import ID_PATTERN, check_id

__all__ = ["KEY_PREFIX", "MAX_ACTIVE_KEYS", "ApiKeyInfo", "ApiKeys", "KeyParts", "parse_key", "secret_sha256"]

KEY_PREFIX = "tsk."
MAX_ACTIVE_KEYS = 50
_ID = ID_PATTERN.strip("^$")


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a user sees of a key: never its secret."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"


class KeyParts(msgspec.Struct, frozen=True):
    user_id: str
    key_id: str
    secret: str


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def format_key(user_id: str, key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{user_id}.{key_id}.{secret}"


def parse_key(token: str) -> KeyParts | None:
    """The parts of an API key, or None if ``token`` is not shaped like one."""
    if not token.startswith(KEY_PREFIX):
        return None
    parts = token[len(KEY_PREFIX) :].split(".")
    if len(parts) != 3 or not all(parts):
        return None
    user_id, key_id, secret = parts
    try:
        check_id(user_id, kind="user_id")
        check_id(key_id, kind="key_id")
    except Exception:
        return None
    return KeyParts(user_id, key_id, secret)


class ApiKeysFields:
    """What ``ApiKeys`` knows (declared apart: see ``domain.base``)."""

    user_id: str
    keys: dict[str, dict[str, object]]
    """key id -> ``{"name", "secret_sha256", "created_at", "revoked_at"}``."""


class ApiKeys(DomainAggregate, ApiKeysFields):
    """The API keys of one user."""

    ID_KIND, ID_KEY = "api_keys", "user_id"

    class Created(Aggregate.Created):
        user_id: str
        at: datetime

        def apply(self, ring: ApiKeys) -> None:
            ring.user_id, ring.keys = self.user_id, {}

    class KeyCreated(Aggregate.Event):
        key_id: str
        name: str
        secret_sha256: str
        at: datetime

        def apply(self, ring: ApiKeys) -> None:
            ring.keys[self.key_id] = {
                "name": self.name,
                "secret_sha256": self.secret_sha256,
                "created_at": self.at,
                "revoked_at": None,
            }

    class KeyRevoked(Aggregate.Event):
        key_id: str
        at: datetime

        def apply(self, ring: ApiKeys) -> None:
            ring.keys[self.key_id]["revoked_at"] = self.at

    @classmethod
    def create(cls, user_id: str, at: datetime) -> ApiKeys:
        check_id(user_id, kind="user_id")
        return cls._create_at(cls.Created, at, user_id=user_id)

    def add_key(self, key_id: str, name: str, secret: str, at: datetime) -> ApiKeyInfo:
        """Record a new key (only its secret's hash); Forbidden past ``MAX_ACTIVE_KEYS`` active keys."""
        check_id(key_id, kind="key_id")
        check_text(name, where="name", max_length=100)
        if key_id in self.keys:
            raise Conflict(f"key {key_id} already exists", where="key_id")
        if sum(1 for k in self.keys.values() if k["revoked_at"] is None) >= MAX_ACTIVE_KEYS:
            raise Forbidden(
                f"at most {MAX_ACTIVE_KEYS} API keys may be active at once; revoke one first",
                code="too_many_keys",
            )
        self._record(self.KeyCreated, at, key_id=key_id, name=name, secret_sha256=secret_sha256(secret))
        return self.info(key_id)

    def revoke(self, key_id: str, at: datetime) -> ApiKeyInfo:
        """Revoke the key (Conflict if it already is)."""
        found = self.info(key_id)
        if found.revoked_at is not None:
            raise Conflict(f"key {key_id} is already revoked", where="key_id")
        self._record(self.KeyRevoked, at, key_id=key_id)
        return self.info(key_id)

    def info(self, key_id: str) -> ApiKeyInfo:
        key = self.keys.get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id}", where="key_id")
        return ApiKeyInfo(
            key_id=key_id,
            name=str(key["name"]),
            created_at=key["created_at"],  # type: ignore[arg-type]
            revoked_at=key["revoked_at"],  # type: ignore[arg-type]
        )

    def listed(self) -> list[ApiKeyInfo]:
        return [self.info(k) for k in self.keys]

    def accepts(self, key_id: str, secret: str) -> bool:
        """Whether ``secret`` is the secret of an active key ``key_id`` (compared in constant time)."""
        key = self.keys.get(key_id)
        if key is None or key["revoked_at"] is not None:
            return False
        return hmac.compare_digest(str(key["secret_sha256"]), secret_sha256(secret))
