"""The email index: one aggregate per lower-cased email, so a second claim conflicts on save."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate
from domain.ids import check_id
from domain.user import normalize_email

__all__ = ["UserEmail", "UserEmailFields"]


class UserEmailFields:
    """What a ``UserEmail`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    email: str
    user_id: str


class UserEmail(DomainAggregate, UserEmailFields):
    """Keyed by the normalized email; saved with the ``User`` it points to."""

    ID_KIND, ID_KEY = "user_email", "email"

    @classmethod
    def create_id(cls, key: str = "default") -> UUID:
        return super().create_id(normalize_email(key))

    class Claimed(Aggregate.Created):
        email: str
        user_id: str
        at: datetime

        def apply(self, index: UserEmail) -> None:
            index.email, index.user_id = self.email, self.user_id

    @classmethod
    def claim(cls, *, email: str, user_id: str, at: datetime) -> UserEmail:
        check_id(user_id, kind="user_id")
        return cls._create_at(cls.Claimed, at, email=normalize_email(email), user_id=user_id)
