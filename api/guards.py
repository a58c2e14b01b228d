"""Guards (``requires_*``): checks that run before a handler, after authentication.

- ``requires_valid_ids`` (app-wide): every ``*_id`` path parameter passes
  ``domain.ids.check_id`` (400 naming it) before anything else looks at it;
- ``requires_owner``: a ``{user_id}`` in the path is the caller's own (an admin
  may read anyone's); another user's id answers 404 exactly like an unknown one;
- ``requires_self``: like ``requires_owner`` but admins get no exception (writes);
- ``requires_admin``: the operators' routes (the console's ``/console/operators``) answer
  404 to anyone but an admin.

Guards are coroutines: Litestar runs a plain function guard on a worker thread,
a hop that costs more than the check itself.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.auth import Principal
from domain.errors import NotFound, Unauthenticated
from domain.ids import check_id

__all__ = ["caller_of", "requires_admin", "requires_owner", "requires_self", "requires_valid_ids"]

_READS = frozenset({"GET", "HEAD"})


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated caller (401 if the route somehow ran without one)."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthenticated("a bearer token is required; log in at POST /auth/login")
    return user


async def requires_valid_ids(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    for name, value in connection.path_params.items():
        if name.endswith("_id"):
            check_id(value if isinstance(value, str) else str(value), kind=name)


def _check_user(connection: ASGIConnection[Any, Any, Any, Any], *, admin_reads: bool) -> None:
    user_id = connection.path_params.get("user_id")
    if user_id is None:
        return
    caller = caller_of(connection)
    if user_id == caller.user_id:
        return
    if admin_reads and caller.is_admin and connection.scope.get("method") in _READS:
        return
    raise NotFound(f"no user {user_id}", where="user_id")


async def requires_owner(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _check_user(connection, admin_reads=True)


async def requires_self(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _check_user(connection, admin_reads=False)


async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The operators' routes: 404 to anyone but an admin (as another user's objects are: a page that
    is not yours does not exist for you)."""
    if not caller_of(connection).is_admin:
        raise NotFound("no such page", where="path")
