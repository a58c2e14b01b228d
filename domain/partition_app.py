"""``PartitionApplication``: what both Applications share (``domain.applications``: one per kind
of partition).

It saves our aggregates' events in one commit per ``save`` (``PartitionApplication.save``, which
follows the library's ``Application.save`` step by step: ``tests/unit/domain/test_library_save.py``
pins it), loads with the msgspec transcoder, and turns the library's errors into ours.
``check_version`` is the optional ``expected_version`` check every update command makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, Recording
from eventsourcing.persistence import JSONTranscoder, RecordConflictError, Transcoder

from domain.base import DomainAggregate
from domain.errors import Conflict, NotFound
from domain.ids import check_id
from domain.transcoder import MsgspecJSONTranscoder

__all__ = ["PartitionApplication", "check_version"]

A = TypeVar("A", bound=DomainAggregate)


class _AggregateEvents(ProcessingEvent[Any]):
    """``ProcessingEvent`` that knows our aggregates without the library's runtime-Protocol checks.

    ``collect_events`` asks ``isinstance(obj, DomainEventProtocol)`` and then
    ``isinstance(obj, CollectEventsProtocol)`` of every object saved: on Python 3.11 each re-reads
    the protocol's members (~17 us), a tenth of a ledger commit of several jobs. Our aggregates
    are taken directly; anything else goes the library's way.
    """

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, DomainAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                others.append(obj)
        super().collect_events(*others, **kwargs)


class PartitionApplication(Application):
    """Loading by string id, expected versions and conflict mapping, shared by both apps."""

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[Any]]:
        """``Application.save`` (its steps, in its order) with ``_AggregateEvents`` collecting.

        Pinned to eventsourcing 9.5.6: ``tests/unit/domain/test_library_save.py`` fails when the
        library's ``save`` or ``collect_events`` change, so this copy is checked again."""
        processing_event = _AggregateEvents()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, still called by its save
        return recordings

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON format, parsed by msgspec (``domain.transcoder``) unless set otherwise."""
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = MsgspecJSONTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def _load(self, cls: type[A], key: str, kind: str) -> A:
        check_id(key, kind=kind)
        return self._load_id(cls, cls.create_id(key), f"no {kind.removesuffix('_id')} {key}", kind)

    def _load_id(self, cls: type[A], aggregate_id: Any, missing: str, where: str | None) -> A:
        aggregate = self._find(aggregate_id)
        if not isinstance(aggregate, cls):  # None, or (ids are namespaced by kind) never another kind
            raise NotFound(missing, where=where)
        return aggregate

    def _find(self, aggregate_id: Any) -> Any | None:
        """The aggregate, or None if it was never created."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _exists(self, cls: type[DomainAggregate], *key: str) -> bool:
        return cls.create_id(*key) in self.repository

    def _check_new(self, cls: type[DomainAggregate], key: str, kind: str) -> None:
        """Refuse ``key`` unless it is a valid id no ``cls`` has yet (Conflict: it already exists)."""
        check_id(key, kind=kind)
        if self._exists(cls, key):
            raise Conflict(f"{kind.removesuffix('_id')} {key} already exists", where=kind)

    def _update(
        self, cls: type[A], key: str, kind: str, expected_version: int | None, action: Callable[[A], None]
    ) -> A:
        aggregate = self._load(cls, key, kind)
        check_version(aggregate, expected_version, f"{kind.removesuffix('_id')} {key}")
        action(aggregate)
        self._save(aggregate)
        return aggregate

    def _save(self, *aggregates: DomainAggregate) -> list[Recording[Any]]:
        try:
            return self.save(*aggregates)
        except RecordConflictError:
            raise Conflict(
                "another write reached this object first; reload it and try again", code="version_conflict"
            ) from None


def check_version(aggregate: DomainAggregate, expected_version: int | None, what: str) -> None:
    """``expected_version`` is the stored version (0: not created yet); pending events do not count."""
    stored = aggregate.version - len(aggregate.pending_events)
    if expected_version is not None and stored != expected_version:
        raise Conflict(
            f"{what} is at version {stored}, not {expected_version}: it changed meanwhile",
            where="expected_version",
            code="version_conflict",
        )
