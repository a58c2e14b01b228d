"""Authentication: argon2 password hashes, the login check, and Litestar's JWT bearer auth.

A token's subject is the user id; its ``extras`` carry the role, the email and the
user's ``token_version`` when it was issued. Every request but login, health and the
schema must carry a valid, unexpired token of a user who is still active and whose
tokens were not revoked since (a suspension or a password change revokes them:
``domain.user``). Both stop a token at once: the check reads the platform's user view,
cached by position. A token issued before versions existed counts as version 0.

An API key (``domain.api_keys``: ``tsk.<user_id>.<key_id>.<secret>``) is accepted as the bearer
token everywhere a login token is, by the same middleware (``KeyOrJWTMiddleware``): the key's
user must be active and the key not revoked, checked against the user's keys on every request,
so a revocation counts at once. A key acts with its user's role; it survives a password change
(programs keep working) but not a suspension.

Verifying a token (PyJWT: parse, HMAC, claims) is most of a small request's
cost, and a client sends the same token again and again: ``RememberedToken``
remembers each exact token string it verified, keyed with the secret and
algorithm, and on a repeat only checks that it has not expired yet.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar.connection import ASGIConnection
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from domain.api_keys import KeyParts, parse_key
from domain.errors import Unauthenticated
from storage import layout
from storage.open import load_or_create_secret as load_or_create_home_secret

if TYPE_CHECKING:
    from runtime.context import Runtime
    from runtime.settings import Settings

__all__ = [
    "CONSOLE_PATHS",
    "PUBLIC_PATHS",
    "KeyOrJWTMiddleware",
    "Principal",
    "RememberedToken",
    "build_jwt_auth",
    "check_password",
    "hash_password",
    "jwt_secret_of",
    "load_or_create_secret",
    "principal_of_token",
    "token_extras",
    "token_version_of",
]

PUBLIC_PATHS = ["^/auth/login$", "^/health$", "^/schema"]
CONSOLE_PATHS = "^/console(/|$)"
"""The web console's pages (``api.console``): signed in by its own cookie, never by a bearer token's
middleware, so the API's routes never accept the console's cookie."""
ADMIN = "admin"
_SECRET_FILE = "jwt_secret"
TOKEN_VERSION = "token_version"


def load_or_create_secret(home: Path) -> str:
    """The JWT secret kept in ``home/jwt_secret`` (mode 0600, in a 0700 home), created on first use."""
    return load_or_create_home_secret(home, _SECRET_FILE)


def token_extras(principal: Principal) -> dict[str, Any]:
    """What a token of ``principal`` carries besides its subject and expiry."""
    return {"role": principal.role, "email": principal.email, TOKEN_VERSION: principal.token_version}


def token_version_of(extras: dict[str, Any]) -> int:
    """The token version a token was issued with (0 for a token from before versions)."""
    version = extras.get(TOKEN_VERSION, 0)
    return version if isinstance(version, int) and not isinstance(version, bool) else -1


def jwt_secret_of(settings: Settings) -> str:
    """``TUNE_JWT_SECRET`` when set, else the one generated once and kept in the home."""
    return settings.jwt_secret or load_or_create_secret(settings.home)


class Principal(msgspec.Struct, frozen=True):
    """The caller, as the token says: who, with which role, and the user's token version then."""

    user_id: str
    role: str = "user"
    email: str = ""
    token_version: int = 0

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): ~50 ms a check.

    The parameters travel inside each hash, so raising them later still verifies old hashes.
    """
    return PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the email is unknown, so both cases take as long."""
    return _hasher().hash("not a password of anyone")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; parameters encoded in the string)."""
    return _hasher().hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; constant work when there is no hash."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


_REMEMBERED = 8192
_verified: dict[tuple[str, str, str, str, str], Token] = {}
_verified_lock = threading.Lock()


class RememberedToken(Token):
    """Litestar's ``Token``; a token string verified once is trusted again until it expires."""

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        key = (
            encoded_token,
            secret,
            algorithm,
            repr(audience),
            repr((issuer, require_claims, strict_audience)),
        )
        token = _verified.get(key)
        if token is not None and (not verify_exp or token.exp.timestamp() > time.time()):
            return token  # type: ignore[return-value]
        token = super().decode(
            encoded_token,
            secret,
            algorithm,
            audience=audience,
            issuer=issuer,
            require_claims=require_claims,
            verify_exp=verify_exp,
            verify_nbf=verify_nbf,
            strict_audience=strict_audience,
        )
        with _verified_lock:
            if len(_verified) >= _REMEMBERED:
                for stale in [k for k, t in _verified.items() if t.exp.timestamp() <= time.time()] or [
                    next(iter(_verified))
                ]:
                    _verified.pop(stale, None)
            _verified[key] = token
        return token


def principal_of_key(runtime: Runtime, key: KeyParts) -> Principal:
    """The user an API key acts for; Unauthenticated unless the user is active and the key valid."""
    if not runtime.accepts_token(key.user_id, None) or not runtime.user_app(key.user_id).accepts_api_key(
        key.key_id, key.secret
    ):
        raise Unauthenticated(
            "this API key is not valid: it was revoked, or its user was suspended or no longer exists"
        )
    info = runtime.view_json(layout.user_info(key.user_id)) or {}
    return Principal(
        key.user_id, str(info.get("role", "user")), str(info.get("email", "")), info.get(TOKEN_VERSION, 0)
    )


class KeyOrJWTMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT bearer middleware, taking an API key (``tsk.…``) as the bearer token too."""

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        key = parse_key(encoded_token)
        if key is None:
            return await super().authenticate_token(encoded_token, connection)
        runtime: Runtime = connection.app.state.runtime
        principal = await runtime.io(principal_of_key, runtime, key)
        return AuthenticationResult(user=principal, auth=key.key_id)


def principal_of_token(runtime: Runtime, token: Token) -> Principal:
    """The caller a verified login token names; Unauthenticated once its user's tokens are no longer
    accepted (suspended, password changed, tokens revoked, or gone)."""
    extras = token.extras
    version = token_version_of(extras)
    if not runtime.accepts_token(token.sub, version):
        raise Unauthenticated(
            "this token is no longer valid (the account was suspended, its password changed or its"
            " tokens revoked, or it no longer exists); log in again"
        )
    return Principal(token.sub, str(extras.get("role", "user")), str(extras.get("email", "")), version)


def build_jwt_auth(settings: Settings, runtime: Runtime) -> JWTAuth[Principal, Token]:
    """Litestar's JWT auth for this app: bearer tokens with expiry, public paths excluded."""

    async def retrieve_user(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        return principal_of_token(runtime, token)

    return JWTAuth[Principal, Token](
        token_secret=jwt_secret_of(settings),
        token_cls=RememberedToken,
        authentication_middleware_class=KeyOrJWTMiddleware,
        description="A login token (POST /auth/login) or an API key (POST /keys), as a bearer token",
        retrieve_user_handler=retrieve_user,
        default_token_expiration=timedelta(seconds=settings.token_ttl_s),
        exclude=[*PUBLIC_PATHS, CONSOLE_PATHS],
        exclude_http_methods=["OPTIONS"],
        require_claims=["exp", "sub"],
    )
