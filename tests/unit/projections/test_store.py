"""The view store the API reads: fed by the projector, otherwise checked by generation."""

from __future__ import annotations

import pytest

from projections.store import ABSENT_TTL_S, ViewStore
from storage.bucket import ObjectNotFound
from storage.memory import MemoryBucket
from tests.unit.projections.builders import FlakyBucket

NAME = "users/u1/metadata/jobs.json"


def test_fed_views_are_read_without_io() -> None:
    bucket = FlakyBucket(MemoryBucket())
    store = ViewStore(bucket)
    stat = bucket.write(NAME, b'{"position":4,"jobs":[]}')
    store.put(NAME, b'{"position":4,"jobs":[]}', stat.generation, 4)
    bucket.reads = bucket.stats = 0
    for _ in range(3):
        assert store.read_json(NAME) == ({"position": 4, "jobs": []}, 4)
    assert (bucket.reads, bucket.stats) == (0, 0)


def test_other_views_are_cached_by_generation() -> None:
    bucket = FlakyBucket(MemoryBucket())
    store = ViewStore(bucket)
    bucket.write(NAME, b'{"position":1,"jobs":[]}')
    assert store.read_raw(NAME) == (b'{"position":1,"jobs":[]}', 1)
    assert store.read_json(NAME)[1] == 1
    assert bucket.reads == 1 and bucket.stats == 1  # the second read only checked the generation
    bucket.write(NAME, b'{"position":2,"jobs":[{"job_id":"j1"}]}')  # another process moved it on
    assert store.read_json(NAME) == ({"position": 2, "jobs": [{"job_id": "j1"}]}, 2)


def test_forget_drops_a_fed_view_and_missing_views_raise() -> None:
    bucket = MemoryBucket()
    store = ViewStore(bucket)
    store.put(NAME, b'{"position":1}', 1, 1)
    store.forget(NAME)
    with pytest.raises(ObjectNotFound):
        store.read_json(NAME)
    assert store.partition_position("users/u1") == 0
    store.forget("users/u1/metadata/position.json")
    bucket.write("users/u1/metadata/position.json", b'{"position":7,"partition":"users/u1"}')
    assert store.partition_position("users/u1") == 7


def test_a_missing_view_is_remembered_briefly_but_its_projector_shows_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = FlakyBucket(MemoryBucket())
    store = ViewStore(bucket)
    clock = [100.0]
    monkeypatch.setattr("projections.store.time.monotonic", lambda: clock[0])
    for _ in range(3):  # a poll of a view not written yet: one read, then none
        with pytest.raises(ObjectNotFound):
            store.read_raw(NAME)
    assert bucket.reads == 1
    stat = bucket.write(NAME, b'{"position":3,"jobs":[]}')  # written by another process
    with pytest.raises(ObjectNotFound):
        store.read_raw(NAME)
    clock[0] += ABSENT_TTL_S
    assert store.read_raw(NAME) == (b'{"position":3,"jobs":[]}', 3)  # seen once the miss expires

    other = "users/u1/metadata/models.json"
    with pytest.raises(ObjectNotFound):
        store.read_raw(other)
    store.put(other, b'{"position":4,"models":[]}', stat.generation, 4)  # its own projector wrote it
    assert store.read_raw(other) == (b'{"position":4,"models":[]}', 4)


def test_a_released_partition_s_views_are_checked_again_and_its_misses_looked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tune run api``: another process committed to the partition and the projector role writes
    its views; what this process fed of it, or found missing, must not hide them."""
    bucket = FlakyBucket(MemoryBucket())
    store = ViewStore(bucket)
    monkeypatch.setattr("projections.store.time.monotonic", lambda: 100.0)  # misses never expire here
    stat = bucket.write(NAME, b'{"position":4,"jobs":[]}')
    store.put(NAME, b'{"position":4,"jobs":[]}', stat.generation, 4, partition="users/u1")
    mine, theirs = "users/u1/jobs/j9/status.json", "users/u2/jobs/j9/status.json"
    for name in (mine, theirs):
        with pytest.raises(ObjectNotFound):
            store.read_raw(name)
    bucket.write(NAME, b'{"position":5,"jobs":[{"job_id":"j9"}]}')  # the projector role, after the commit
    bucket.write(mine, b'{"position":5}')
    bucket.write(theirs, b'{"position":2}')
    assert store.read_raw(NAME)[1] == 4  # fed here, trusted until told otherwise

    store.release("users/u1")
    assert store.read_raw(NAME)[1] == 5 and store.read_raw(mine)[1] == 5
    with pytest.raises(ObjectNotFound):  # another partition's miss is still remembered
        store.read_raw(theirs)
    store.release("platform")  # the platform's partition writes views in every user's folder
    assert store.read_raw(theirs)[1] == 2
