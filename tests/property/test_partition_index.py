"""A partition's index (``storage.eventstore.index``) answers as the events it was given say, however they
came: one aggregate's next versions in one commit (indexed as one run), several aggregates in a commit,
versions out of order, UUID and text ids, commits indexed one by one or many at a time."""

from __future__ import annotations

from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.eventstore.commits import Commit, EventRecord
from storage.eventstore.index import PartitionIndex

IDS: list[UUID | str] = [UUID(int=1), UUID(int=2), "text-a", "text-b"]


def record(originator: UUID | str, version: int) -> EventRecord:
    if isinstance(originator, UUID):
        return EventRecord(originator_id=originator, originator_version=version, topic="t", state="{}")
    return EventRecord(text_id=originator, originator_version=version, topic="t", state="{}")


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple[UUID | str, int]]]:
    """Commits of (aggregate, version) events, every version new to its aggregate."""
    taken: dict[UUID | str, set[int]] = {originator: set() for originator in IDS}
    commits = []
    for _ in range(draw(st.integers(1, 8))):
        events = []
        if draw(st.booleans()):  # one aggregate's next versions (a usual save), from its last on or below it
            originator = draw(st.sampled_from(IDS))
            start = draw(st.integers(1, 30))
            versions = range(start, start + draw(st.integers(1, 6)))
            events = [(originator, v) for v in versions if v not in taken[originator]]
        else:
            for _ in range(draw(st.integers(1, 6))):
                originator, version = draw(st.sampled_from(IDS)), draw(st.integers(1, 40))
                if version not in taken[originator] and (originator, version) not in events:
                    events.append((originator, version))
        for originator, version in events:
            taken[originator].add(version)
        if events:
            commits.append(events)
    return commits


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(1, 3), st.data())
def test_the_index_finds_every_event_by_aggregate_and_version(
    commits: list[list[tuple[UUID | str, int]]], per_add: int, data: st.DataObject
) -> None:
    index = PartitionIndex("p/events/")
    expected: dict[UUID | str, list[tuple[int, int]]] = {o: [] for o in IDS}  # (version, notification id)
    notification_id = 0
    for at in range(0, len(commits), per_add):
        batch = []
        for events in commits[at : at + per_add]:
            seq = index.tail_seq + len(batch) + 1
            batch.append(Commit(seq, notification_id + 1, "", [record(o, v) for o, v in events]))
            for originator, version in events:
                notification_id += 1
                expected[originator].append((version, notification_id))
        index.add(batch, [f"sha{c.seq}" for c in batch])
        if data.draw(st.booleans()):  # indexed now, or later with what follows
            index.check({}, None)

    for originator in IDS:
        found = index.select_events(originator)
        assert [(e.originator_id, e.originator_version) for e in found] == [
            (originator, version) for version, _ in sorted(expected[originator])]
        for version, _ in expected[originator]:
            with pytest.raises(IntegrityError):
                index.check({originator: {version}}, None)
        free = max((v for v, _ in expected[originator]), default=0) + 1
        index.check({originator: {free}}, None)
