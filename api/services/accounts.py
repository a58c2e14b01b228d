"""Accounts: log in (argon2 check, LoggedIn event), create users, and the first user of a new home."""

from __future__ import annotations

import secrets

from api.auth import Principal, check_password, hash_password
from domain.errors import Forbidden, Unauthenticated
from domain.ids import new_id
from runtime.context import Runtime
from storage import layout
from storage.layout import PLATFORM

__all__ = ["AccountService", "FirstUser"]

FIRST_EMAIL = "admin@localhost.localdomain"


class FirstUser:
    """The credentials made for the first user of an empty home (print them once)."""

    def __init__(self, user_id: str, email: str, password: str) -> None:
        self.user_id, self.email, self.password = user_id, email, password


class AccountService:
    """Users on the platform partition."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def login(self, email: str, password: str) -> Principal:
        """The user whose email and password these are; 401 otherwise (same answer, same work)."""
        creds = self.rt.platform.get_credentials(email)
        if not check_password(creds.password_hash if creds else None, password) or creds is None:
            raise Unauthenticated("wrong email or password", where="email")
        if creds.status != "active":
            raise Forbidden("this account is suspended; ask an operator", code="suspended")
        self.rt.platform.record_login(creds.user_id, at=self.rt.clock())
        self.rt.committed(PLATFORM)
        return Principal(creds.user_id, creds.role, creds.email)

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
