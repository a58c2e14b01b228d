"""``UserService``: the base of the services bound to one user's partition."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from domain.applications import UserApp
from runtime.context import Runtime
from storage import layout

__all__ = ["UserService"]

T = TypeVar("T")


class UserService:
    """Reads one user's views and saves through the user's application.

    Args:
        runtime: the process's runtime (bucket, views, applications, projector, clock).
        user_id: whose partition every read and command works on.
    """

    def __init__(self, runtime: Runtime, user_id: str) -> None:
        self.rt = runtime
        self.user_id = user_id

    @property
    def app(self) -> UserApp:
        """The user's application (its commands save to the user's partition)."""
        return self.rt.user_app(self.user_id)

    def committed(self) -> None:
        """A command just saved to the user's partition: wait (bounded) until its views show it."""
        self.rt.committed(layout.user_partition(self.user_id))

    def object_view(self, name_of: Callable[[str, str], str], noun: str, object_id: str, type: type[T]) -> T:
        """The view ``name_of(user_id, object_id)`` of one job, dataset or model, decoded as ``type``.

        NotFound(``no <noun> <id>``, where ``<noun>_id``) when it does not exist or is deleted.
        """
        name = name_of(self.user_id, object_id)
        return self.rt.live_view(name, type, missing=f"no {noun} {object_id}", where=f"{noun}_id")
