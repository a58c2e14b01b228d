"""The two kinds of partition, by name, and the prefix of each one's events.

A partition is one event log with the views folded from it: ``platform``, or
``users/<user_id>`` for each user. Its name is also the bucket prefix of its
events (``<partition>/events/``) and of its views.

These few names live in the domain because the applications default their
``TUNE_PARTITION`` to them and the domain imports no storage. Every other object
name is built in ``storage.layout``, which re-exports these; import them from there.
"""

from __future__ import annotations

from domain.ids import check_id

__all__ = ["PLATFORM", "PLATFORM_EVENTS", "USERS", "events_prefix", "user_events", "user_partition"]

PLATFORM = "platform"
"""The platform partition: users, the price list, the base-model catalogue."""

USERS = "users/"
"""Every user partition's name starts with it: ``users/<user_id>``."""


def user_partition(user_id: str) -> str:
    """``users/<user_id>``; the id must pass ``check_id`` (ValidationFailed)."""
    return f"{USERS}{check_id(user_id, kind='user_id')}"


def events_prefix(partition: str) -> str:
    """``<partition>/events/``: where the partition's commits lie (``TUNE_PARTITION``)."""
    return f"{partition}/events/"


PLATFORM_EVENTS = events_prefix(PLATFORM)
"""``platform/events/``."""


def user_events(user_id: str) -> str:
    """``users/<user_id>/events/``; the id must pass ``check_id`` (ValidationFailed)."""
    return events_prefix(user_partition(user_id))
