"""The base-model catalogue (platform singleton): the base models users may fine-tune.

Source kinds are those ``runners.base_models`` resolves: ``hub`` (a Hugging Face repository
id), ``builtin`` (made here, no download) and ``local`` (a folder on the server).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_text
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.ids import check_id

__all__ = ["SOURCE_KINDS", "BaseModelCatalogue", "BaseModelCatalogueFields", "SourceKind"]

SourceKind = Literal["hub", "builtin", "local"]
SOURCE_KINDS: tuple[str, ...] = ("hub", "builtin", "local")


class BaseModelCatalogueFields:
    """What a ``BaseModelCatalogue`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    models: dict[str, dict[str, Any]]
    updated_at: datetime


class BaseModelCatalogue(DomainAggregate, BaseModelCatalogueFields):
    """The one catalogue (a singleton).

    ``models[name]`` is ``{"source_kind", "source", "chat_template", "added_at"}``.
    """

    ID_KIND, ID_KEY = "base_model_catalogue", ""

    class Created(Aggregate.Created):
        at: datetime

        def apply(self, catalogue: BaseModelCatalogue) -> None:
            catalogue.models, catalogue.updated_at = {}, self.at

    class BaseModelAdded(Aggregate.Event):
        name: str
        source_kind: str
        source: str
        chat_template: bool
        at: datetime

        def apply(self, catalogue: BaseModelCatalogue) -> None:
            catalogue.models[self.name] = {
                "source_kind": self.source_kind,
                "source": self.source,
                "chat_template": self.chat_template,
                "added_at": self.at,
            }
            catalogue.updated_at = self.at

    class BaseModelRemoved(Aggregate.Event):
        name: str
        at: datetime

        def apply(self, catalogue: BaseModelCatalogue) -> None:
            catalogue.models.pop(self.name, None)
            catalogue.updated_at = self.at

    @classmethod
    def create(cls, at: datetime) -> BaseModelCatalogue:
        return cls._create_at(cls.Created, at)

    def add(
        self, name: str, source_kind: str, source: str, at: datetime, *, chat_template: bool = True
    ) -> None:
        """Offer base model ``name`` (an id) from ``source`` (hub repo id, builder name or folder)."""
        check_id(name, kind="name")
        if source_kind not in SOURCE_KINDS:
            raise ValidationFailed(
                f"source_kind must be one of {', '.join(SOURCE_KINDS)} (got {source_kind!r:.20})",
                where="source_kind",
            )
        check_text(source, where="source")
        if name in self.models:
            raise Conflict(f"base model {name} is already in the catalogue", where="name")
        self._record(
            self.BaseModelAdded,
            at,
            name=name,
            source_kind=source_kind,
            source=source,
            chat_template=bool(chat_template),
        )

    def remove(self, name: str, at: datetime) -> None:
        self.check_has(name)
        self._record(self.BaseModelRemoved, at, name=name)

    def check_has(self, name: str) -> None:
        """NotFound unless ``name`` is in the catalogue."""
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"no base model {name!r} (available: {known})", where="base_model")
