"""MemoryBucket passes the single-process part of the Bucket contract, and is thread-safe."""

from __future__ import annotations

import threading

import pytest

from storage import Bucket
from storage.memory import MemoryBucket
from tests.buckets import create_each
from tests.contract.test_bucket_contract import (  # the shared contract, run here on MemoryBucket
    test_bad_list_prefixes_are_rejected,
    test_bad_names_are_rejected_before_any_io,
    test_compare_and_swap_on_a_missing_name_fails,
    test_compare_and_swap_succeeds_on_the_current_generation_only,
    test_create_only_refuses_an_existing_name,
    test_delete_removes_the_object,
    test_generations_increase_on_every_write,
    test_list_returns_names_in_lexicographic_order,
    test_list_starts_at_start_offset_inclusive,
    test_missing_object_raises_object_not_found,
    test_open_read_streams_the_object,
    test_stat_reports_size_and_md5,
    test_upload_streams_a_large_object_from_a_file_or_chunks,
    test_write_then_read_returns_the_same_bytes_and_generation,
)

__all__ = [
    "test_bad_list_prefixes_are_rejected",
    "test_bad_names_are_rejected_before_any_io",
    "test_compare_and_swap_on_a_missing_name_fails",
    "test_compare_and_swap_succeeds_on_the_current_generation_only",
    "test_create_only_refuses_an_existing_name",
    "test_delete_removes_the_object",
    "test_generations_increase_on_every_write",
    "test_list_returns_names_in_lexicographic_order",
    "test_list_starts_at_start_offset_inclusive",
    "test_missing_object_raises_object_not_found",
    "test_open_read_streams_the_object",
    "test_stat_reports_size_and_md5",
    "test_upload_streams_a_large_object_from_a_file_or_chunks",
    "test_write_then_read_returns_the_same_bytes_and_generation",
]


@pytest.fixture
def bucket() -> Bucket:
    """Overrides the conftest ``bucket``: the imported contract tests run on a MemoryBucket."""
    return MemoryBucket()


def test_concurrent_create_only_has_one_winner_per_name() -> None:
    memory = MemoryBucket()
    names = [f"platform/events/{seq:012d}.json" for seq in range(1, 51)]
    wins: list[str] = []
    start = threading.Barrier(8)

    def race(me: int) -> None:
        start.wait()
        wins.extend(create_each(memory, names, me))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(wins) == names
    assert list(memory.list("platform/events/")) == names


def test_list_is_a_snapshot_that_later_writes_do_not_disturb() -> None:
    memory = MemoryBucket()
    for name in ("a/1", "a/2", "b/1"):
        memory.write(name, b"x")

    listing = memory.list("a/")
    memory.write("a/0", b"x")
    memory.delete("a/2")

    assert list(listing) == ["a/1", "a/2"]
    assert list(memory.list("a/", start_offset="a/1")) == ["a/1"]


def test_each_bucket_is_separate_and_names_itself() -> None:
    first, second = MemoryBucket(), MemoryBucket()
    first.write("x", b"1")

    assert not second.exists("x")
    assert first.url.startswith("memory://") and first.url != second.url
