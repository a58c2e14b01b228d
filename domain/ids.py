"""Identifiers: how they are made and how outside ones are checked.

Every id that reaches an object name passes ``check_id`` first: 1-64
characters of ``[A-Za-z0-9_-]``, starting with a letter or digit; so no
``..``, no slash, no empty or over-long id can ever form a path.
"""

from __future__ import annotations

import functools
import re
import uuid

from domain.errors import ValidationFailed

__all__ = ["ID_PATTERN", "NAMESPACE", "aggregate_id", "check_id", "check_ids", "new_id"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_ID = re.compile(ID_PATTERN)


def check_id(value: str, *, kind: str = "id") -> str:
    """Return ``value`` if it is a safe identifier, else raise ValidationFailed naming ``kind``."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValidationFailed(
            f"{kind} must be 1-64 characters of letters, digits, '-' or '_' (got {value!r:.80})",
            where=kind,
        )
    return value


def check_ids(**ids: str) -> None:
    """``check_id`` each value in turn, its keyword as the kind: ``check_ids(job_id=j, user_id=u)``."""
    for kind, value in ids.items():
        check_id(value, kind=kind)


def new_id(prefix: str) -> str:
    """A fresh id like ``job_3f2a…`` (prefix + 24 hex characters)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


NAMESPACE = uuid.UUID("5b0f3c2e-8d4a-5e1f-9c6b-2a7d4e8f1b30")
"""The namespace of every aggregate id (``aggregate_id``); never change it: stored events name these ids."""


@functools.lru_cache(maxsize=65_536)
def aggregate_id(kind: str, key: str) -> uuid.UUID:
    """The aggregate id of the ``kind`` object named ``key``: ``uuid5(NAMESPACE, "<kind>:<key>")``.

    Remembered (the ledger asks for every job of every batch; a SHA-1 each time was a tenth of
    its per-job work).
    """
    return uuid.uuid5(NAMESPACE, f"{kind}:{key}")
