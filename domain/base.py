"""What every aggregate here shares: events carry ``at``, ids come from string keys.

Every event has an explicit ``at: datetime`` (UTC) passed in by the caller; the library's own
``timestamp`` is set to the same instant, so a rebuild from the log is deterministic. Projections
read ``at``. Aggregate ids are ``domain.ids.aggregate_id(ID_KIND, key)``, ``key`` being the
created event's ``ID_KEY`` field (``"default"`` for a singleton, whose ``ID_KEY`` is empty).

Attributes an aggregate gets from its events are declared once, in a plain class it inherits
(``Job(DomainAggregate, JobFields)``): an annotation in the aggregate's own body would make
eventsourcing turn it into a dataclass with an ``__init__`` the created event cannot call. The
read models (``domain.read_models``) are built from the same declarations.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID

from eventsourcing.domain import Aggregate, CanInitAggregate, CanMutateAggregate

from domain.errors import Conflict, ValidationFailed
from domain.ids import aggregate_id

__all__ = ["Deletable", "DomainAggregate", "check_count", "check_text", "check_utc"]


def check_utc(at: datetime, *, where: str = "at") -> datetime:
    """``at`` as an aware UTC datetime; naive times are refused (there is no clock here to guess with)."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValidationFailed(
            f"{where} must be a timezone-aware datetime (UTC), got {at!r:.60}", where=where
        )
    return at.astimezone(UTC)


def check_count(value: int | None, *, where: str, minimum: int = 0, maximum: int | None = None) -> None:
    """Refuse ``value`` unless it is an int (not bool) within ``minimum``..``maximum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationFailed(f"{where} must be an integer (got {value!r:.40})", where=where)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValidationFailed(f"{where} must be at least {minimum}{upper} (got {value})", where=where)


def check_text(value: str, *, where: str, max_length: int = 1000) -> None:
    """Refuse ``value`` unless it is a non-blank string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ValidationFailed(f"{where} must be 1-{max_length} characters of text", where=where)


class DomainAggregate(Aggregate):
    """Base of this package's aggregates: ``_create_at`` and ``_record`` stamp ``at`` on events."""

    ID_KIND, ID_KEY = "", ""  # each aggregate sets both (module docstring)

    @classmethod
    def create_id(cls, key: str = "default") -> UUID:
        return aggregate_id(cls.ID_KIND, key)

    @classmethod
    def _create_at(cls, event_class: type[CanInitAggregate[Any]], at: datetime, **fields: Any) -> Self:
        at = check_utc(at)
        key = fields[cls.ID_KEY] if cls.ID_KEY else "default"
        return cls._create(event_class, id=cls.create_id(key), at=at, timestamp=at, **fields)

    def _record(self, event_class: type[CanMutateAggregate[Any]], at: datetime, **fields: Any) -> None:
        at = check_utc(at)
        self.trigger_event(event_class, at=at, timestamp=at, **fields)


class Deletable(DomainAggregate):
    """An aggregate deleted by a last event that leaves it a tombstone (``status`` ``deleted``).

    Each subclass declares its own ``class Deleted(Deletable.Deleted)``, so the stored event is
    named after it (``Dataset.Deleted``).
    """

    class Deleted(Aggregate.Event):
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.status, aggregate.updated_at = "deleted", self.at

    def delete(self, at: datetime, active_job_ids: Iterable[str] = ()) -> None:
        """Refused (Conflict) if it is deleted already or any job in ``active_job_ids`` uses it
        (e.g. trains on it), naming them."""
        what = f"{self.ID_KIND} {getattr(self, self.ID_KEY)}"
        if self.status == "deleted":  # type: ignore[attr-defined]
            raise Conflict(f"{what} is already deleted")
        jobs = sorted(set(active_job_ids))
        if jobs:
            raise Conflict(
                f"{what} is in use by active job(s) {', '.join(jobs)}; stop them first", code="in_use"
            )
        self._record(self.Deleted, at)
