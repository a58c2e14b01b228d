"""Users (platform partition): ``users/<id>/metadata/user_info.json`` and ``platform/metadata/users.json``.

The listing row leaves out ``last_login``, so a login rewrites only that user's
user_info.json. No password hash ever reaches a view. ``token_version`` (what the API checks a
token against) appears in user_info.json once tokens were revoked: a history without
``User.TokensRevoked`` projects exactly as it did before that event existed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from domain.user import DEFAULT_MAX_CONCURRENT_JOBS, DEFAULT_MAX_DATASET_BYTES, User
from projections.listing import copied, opened, ordered_rows, started_by
from projections.render import event_name, event_names

__all__ = [
    "EVENTS",
    "UserInfoView",
    "UserRow",
    "UserState",
    "UsersView",
    "fold",
    "item_view",
    "listed",
    "listing_view",
    "row",
]

EVENTS = event_names(
    User.Registered,
    User.LoggedIn,
    User.PasswordChanged,
    User.Suspended,
    User.Reactivated,
    User.QuotaSet,
    User.TokensRevoked,
)


class Quota(msgspec.Struct, frozen=True):
    max_concurrent_jobs: int | None
    max_dataset_bytes: int | None


class UserState(started_by(User.Registered, leave_out=("password_hash",)), frozen=True):  # type: ignore[misc]
    """What ``User.Registered`` records (never the password hash), then what the views add."""

    created_at: datetime
    updated_at: datetime
    status: str = "active"
    last_login: datetime | None = None
    suspended_reason: str | None = None
    quota: Quota = Quota(DEFAULT_MAX_CONCURRENT_JOBS, DEFAULT_MAX_DATASET_BYTES)
    password_changed_at: datetime | None = None
    token_version: int = 0


def fold(user: UserState | None, event: Any) -> UserState:
    """The user after one of their events (pure)."""
    if user is None:
        return opened(UserState, event, "User.Registered")
    name = event_name(event)
    at: datetime = event.at
    changes: dict[str, Any] = {"updated_at": at}
    if name == "User.LoggedIn":
        changes["last_login"] = at
    elif name == "User.PasswordChanged":
        changes["password_changed_at"] = at
    elif name == "User.Suspended":
        changes.update(status="suspended", suspended_reason=event.reason)
    elif name == "User.Reactivated":
        changes.update(status="active", suspended_reason=None)
    elif name == "User.QuotaSet":
        changes["quota"] = Quota(event.max_concurrent_jobs, event.max_dataset_bytes)
    elif name == "User.TokensRevoked":
        changes["token_version"] = event.token_version
    return replace(user, **changes)


class UserInfoView(msgspec.Struct, omit_defaults=True):
    """``users/<id>/metadata/user_info.json`` (the seed's fields first; ``token_version`` only once
    non-zero, so the views of older histories stay byte for byte what they were)."""

    position: int
    email: str
    created_at: str | None
    status: str
    last_login: str | None
    user_id: str
    role: str
    suspended_reason: str | None
    quota: Quota
    password_changed_at: str | None
    updated_at: str | None
    token_version: int = 0


def item_view(user: UserState, position: int) -> UserInfoView:
    return copied(UserInfoView, user, position=position)


class UserRow(msgspec.Struct, frozen=True):
    user_id: str
    email: str
    role: str
    status: str
    created_at: str | None


class UsersView(msgspec.Struct):
    """``platform/metadata/users.json``: every user, oldest first."""

    position: int
    users: list[UserRow]


def row(user: UserState) -> UserRow:
    return copied(UserRow, user)


def listed(user: UserState) -> tuple[Any, ...]:
    """What the listing row is made of, uncooked (a login changes none of it)."""
    return (user.email, user.role, user.status)


def listing_view(users: list[UserState], position: int) -> UsersView:
    return UsersView(position, ordered_rows(users, "user_id", row))
