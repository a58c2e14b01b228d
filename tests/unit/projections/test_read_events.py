"""``read_events`` maps a bucket log's stored records directly (no notification objects on the way):
it yields exactly what reading the recorder's notifications yields, from any position, a record
stored under a string id (the fallback through a ``StoredEvent``) included."""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent

from projections.replay import read_events
from storage.eventstore import open_application
from storage.eventstore.recorders import log_of
from storage.memory import MemoryBucket

TEXT_ID = "0b5c4e52-8a4e-4a50-9a8c-0d3b0c3c2a11"


class Note(Aggregate):
    @event("Made")
    def __init__(self, text: str) -> None:
        self.text = text

    @event("Edited")
    def edit(self, text: str) -> None:
        self.text = text


class Notes(Application):
    pass


def _through_notifications(app: Application, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """The slow path: the recorder's notifications, each mapped by the application's mapper."""
    found = []
    for notification in app.recorder.select_notifications(start=after + 1, limit=10**6):
        found.append((notification.id, vars(app.mapper.to_domain_event(notification))))
    return found


def test_a_bucket_log_yields_the_same_events_as_its_notifications_from_any_position() -> None:
    app = open_application(Notes, MemoryBucket(), "users/usr_a/events/")
    for i in range(7):
        note = Note(f"note {i}")
        note.edit(f"note {i}, edited")
        app.save(note)
    first = next(iter(app.recorder.select_notifications(start=1, limit=1)))
    text_id = StoredEvent(TEXT_ID, 1, first.topic, first.state)  # stored by a string id (``text_id``)
    app.recorder.insert_events([text_id])
    assert log_of(app) is not None  # the fast path is taken
    direct = [(position, vars(e)) for position, e in read_events(app, batch=3)]
    assert direct == _through_notifications(app)
    assert len(direct) == 15 and str(direct[-1][1]["originator_id"]) == TEXT_ID
    assert [(p, vars(e)) for p, e in read_events(app, 9, batch=4)] == _through_notifications(app, 9)
