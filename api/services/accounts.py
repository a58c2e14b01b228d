"""Accounts: log in (argon2 check, backoff, LoggedIn event), create users, the first user of a new home."""

from __future__ import annotations

import logging
import secrets

from api.auth import Principal, check_password, hash_password
from api.throttle import LoginThrottle
from domain.errors import Unauthenticated
from domain.ids import new_id
from runtime.context import Runtime
from storage import layout
from storage.layout import PLATFORM

__all__ = ["AccountService", "FirstUser"]

log = logging.getLogger("api.login")

FIRST_EMAIL = "admin@localhost.localdomain"


class FirstUser:
    """The credentials made for the first user of an empty home (print them once)."""

    def __init__(self, user_id: str, email: str, password: str) -> None:
        self.user_id, self.email, self.password = user_id, email, password


class AccountService:
    """Users on the platform partition.

    Args:
        runtime: the process's context.
        throttle: the process's backoff for failed logins (``create_app`` keeps one per app).
    """

    def __init__(self, runtime: Runtime, throttle: LoginThrottle | None = None) -> None:
        self.rt = runtime
        self.throttle = throttle if throttle is not None else LoginThrottle()

    def login(self, email: str, password: str, address: str = "unknown") -> Principal:
        """The active user whose email and password these are.

        Every refusal is the same 401, after the same work: an unknown email, a wrong password,
        and a suspended account (even with its right password, which must not be confirmed).
        Each counts as a failure for the account and ``address``; while either is closed by
        too many, RateLimited (429) comes first, before any check (``api.throttle``).
        """
        self.throttle.check(email, address)
        creds = self.rt.platform.get_credentials(email)
        right = check_password(creds.password_hash if creds else None, password)
        if creds is None or not right or creds.status != "active":
            if creds is not None and right:
                log.info("login refused: account %s is %s (address %s)", creds.email, creds.status, address)
            self.throttle.failed(email, address, known_as=creds.email if creds else None)
            raise Unauthenticated("wrong email or password", where="email")
        self.throttle.succeeded(email)
        self.rt.platform.record_login(creds.user_id, at=self.rt.clock())
        self.rt.committed(PLATFORM)
        return Principal(creds.user_id, creds.role, creds.email, creds.token_version)

    def create_user(self, email: str, password: str, role: str = "user") -> str:
        """Register a user (the operator's ``tune admin user create``); returns the user id."""
        user_id = self.rt.platform.register_user(
            email, hash_password(password), role, self.rt.clock(), user_id=new_id("usr")
        )
        self.rt.committed(PLATFORM)
        return user_id

    def ensure_first_user(self, email: str = FIRST_EMAIL) -> FirstUser | None:
        """On a platform with no users, create an admin with a random password; else None."""
        self.rt.committed(PLATFORM)
        listing = self.rt.view_json(layout.users()) or {}
        if listing.get("users"):
            return None
        password = secrets.token_hex(12)  # hex: never starts with "-", so it pastes as a CLI argument
        user_id = self.create_user(email, password, role="admin")
        return FirstUser(user_id, email, password)
