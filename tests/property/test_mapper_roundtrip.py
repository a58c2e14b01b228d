"""Event payloads come back from the bucket exactly: Decimal, datetime, UUID, nested dicts and lists.

The path is the whole one: an Application's mapper (the library's
JSONTranscoder with its UUID, Decimal and datetime transcodings), one commit
object in the bucket, a cold reader (a fresh PartitionLog that decodes the
commit), and the mapper back. "Exactly" means the same types all the way
down, Decimals with the same digits and exponent, datetimes with the same
wall time and UTC offset. Known limits of the JSON transcoder, kept out of
the strategies: tuples come back as lists, dict keys must be strings, a dict
of exactly the keys ``_type_`` and ``_data_`` is reserved, NaN floats never
equal themselves, and a ZoneInfo zone comes back as its fixed offset.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.eventstore import open_application
from storage.eventstore.log import PartitionLog
from storage.memory import MemoryBucket

PARTITION = "users/u1/events/"

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    text,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.uuids(),
)
keys = text.filter(lambda key: key not in ("_type_", "_data_"))
payloads = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


class Thing(Aggregate):
    @event("Created")
    def __init__(self) -> None:
        self.payloads: list[Any] = []

    @event("Recorded")
    def record(self, payload: Any, amount: Decimal, at: datetime, ref: uuid.UUID) -> None:
        self.payloads.append(payload)


class Things(Application[uuid.UUID]):
    pass


def exact(left: Any, right: Any) -> bool:
    """Equal, of the same type, all the way down."""
    if type(left) is not type(right):
        return False
    if isinstance(left, Decimal):
        return left.as_tuple() == right.as_tuple()
    if isinstance(left, datetime):
        wall_and_offset = (left.replace(tzinfo=None), left.utcoffset())
        return wall_and_offset == (right.replace(tzinfo=None), right.utcoffset())
    if isinstance(left, float):
        return repr(left) == repr(right)
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(exact(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(exact(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


@settings(max_examples=150, deadline=None)
@given(payloads, st.decimals(allow_nan=False), st.datetimes(timezones=st.timezones()), st.uuids())
def test_event_state_round_trips_exactly_through_the_bucket(
    payload: Any, amount: Decimal, at: datetime, ref: uuid.UUID
) -> None:
    bucket = MemoryBucket()
    app = open_application(Things, bucket, PARTITION)
    thing = Thing()
    thing.record(payload, amount, at, ref)
    app.save(thing)

    stored = PartitionLog(bucket, PARTITION).select_events(thing.id)  # decoded from the commit object
    recorded = app.mapper.to_domain_event(stored[1])

    assert exact(recorded.payload, payload)  # type: ignore[attr-defined]
    assert exact(recorded.amount, amount)  # type: ignore[attr-defined]
    assert exact(recorded.at, at)  # type: ignore[attr-defined]
    assert exact(recorded.ref, ref)  # type: ignore[attr-defined]
    assert exact(recorded.timestamp, thing.modified_on)  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.uuids(), text.filter(bool)),
    st.integers(min_value=0, max_value=2**62),
    text,
    st.one_of(st.binary(max_size=64), text.map(str.encode)),
)
def test_stored_events_round_trip_byte_for_byte(
    originator_id: uuid.UUID | str, version: int, topic: str, state: bytes
) -> None:
    bucket = MemoryBucket()
    PartitionLog(bucket, PARTITION).append([StoredEvent(originator_id, version, topic, state)])

    (back,) = PartitionLog(bucket, PARTITION).select_notifications(None, 10)

    assert (type(back.originator_id), back.originator_id) == (type(originator_id), originator_id)
    assert (back.originator_version, back.topic, back.state) == (version, topic, state)
