"""The Bucket contract: every test runs on LocalBucket and on GcsBucket (fake-gcs-server)."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import (
    AlreadyExists,
    Bucket,
    LocalBucket,
    ObjectNotFound,
    ObjectStat,
    PreconditionFailed,
    open_bucket,
)
from tests.buckets import create_each

_FORK = multiprocessing.get_context("fork")


def is_the_written(stat: ObjectStat, written: ObjectStat) -> bool:
    """``stat`` (read) is of the object whose write returned ``written``: a local write does not hash what
    it wrote (its md5 is None), a read does."""
    return (stat.name, stat.generation, stat.size) == (written.name, written.generation, written.size) and (
        written.md5_hex in (None, stat.md5_hex))


def test_write_then_read_returns_the_same_bytes_and_generation(bucket: Bucket) -> None:
    written = bucket.write("users/u1/metadata/jobs.json", b'{"jobs": []}')

    data, stat = bucket.read_with_stat("users/u1/metadata/jobs.json")

    assert data == b'{"jobs": []}'
    assert bucket.read("users/u1/metadata/jobs.json") == data
    assert stat.generation == written.generation == bucket.stat("users/u1/metadata/jobs.json").generation
    assert (stat.size, stat.md5_hex) == (12, hashlib.md5(data).hexdigest())
    assert is_the_written(stat, written)


def test_open_read_streams_the_object(bucket: Bucket) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    bucket.write("blob.bin", payload)

    with bucket.open_read("blob.bin") as f:
        chunks = list(iter(lambda: f.read(256 * 1024), b""))

    assert len(chunks) > 1
    assert b"".join(chunks) == payload


@pytest.mark.parametrize("op", ["read", "read_with_stat", "open_read", "stat", "delete"])
def test_missing_object_raises_object_not_found(bucket: Bucket, op: str) -> None:
    bucket.write("present", b"x")
    with pytest.raises(ObjectNotFound):
        getattr(bucket, op)("absent")
    assert not bucket.exists("absent")
    assert bucket.exists("present")


def test_create_only_refuses_an_existing_name(bucket: Bucket) -> None:
    first = bucket.create("platform/events/000000000001.json", b"first")

    with pytest.raises(AlreadyExists) as caught:
        bucket.create("platform/events/000000000001.json", b"second")

    assert isinstance(caught.value, PreconditionFailed)
    data, stat = bucket.read_with_stat("platform/events/000000000001.json")
    assert (data, stat.generation) == (b"first", first.generation)


def test_compare_and_swap_succeeds_on_the_current_generation_only(bucket: Bucket) -> None:
    old = bucket.write("status.json", b"v1")
    new = bucket.write("status.json", b"v2", if_generation_match=old.generation)

    with pytest.raises(PreconditionFailed) as caught:
        bucket.write("status.json", b"v3", if_generation_match=old.generation)

    assert not isinstance(caught.value, AlreadyExists)
    assert new.generation > old.generation
    data, stat = bucket.read_with_stat("status.json")
    assert data == b"v2" and is_the_written(stat, new)


def test_compare_and_swap_on_a_missing_name_fails(bucket: Bucket) -> None:
    with pytest.raises(PreconditionFailed):
        bucket.write("nothing-here", b"x", if_generation_match=12345)
    assert not bucket.exists("nothing-here")


def test_generations_increase_on_every_write(bucket: Bucket) -> None:
    generations = [bucket.create("g", b"0").generation]
    for i in range(1, 6):
        generations.append(bucket.write("g", str(i).encode()).generation)
    generations.append(bucket.upload("g", io.BytesIO(b"uploaded")).generation)
    generations.append(bucket.write("g", b"cas", if_generation_match=generations[-1]).generation)

    assert generations == sorted(set(generations))
    assert all(g > 0 for g in generations)


_NAMES = [
    "a-b",
    "a.txt",
    "a/c/d",
    "a/c/e",
    "a/ca",
    "a0",
    "b/x.json",
    "users/u1/events/000000000002.json",
    "users/u1/events/000000000010.json",
    "users/u2/events/000000000001.json",
]  # sorted: - . / 0


def test_list_returns_names_in_lexicographic_order(bucket: Bucket) -> None:
    for name in random.sample(_NAMES, len(_NAMES)):
        bucket.write(name, name.encode())

    assert list(bucket.list()) == sorted(_NAMES)
    assert list(bucket.list("a/")) == ["a/c/d", "a/c/e", "a/ca"]
    assert list(bucket.list("a/c")) == ["a/c/d", "a/c/e", "a/ca"]
    assert list(bucket.list("a/c/")) == ["a/c/d", "a/c/e"]
    assert list(bucket.list("users/u1/events/")) == _NAMES[7:9]
    assert list(bucket.list("zzz/")) == []


def test_list_starts_at_start_offset_inclusive(bucket: Bucket) -> None:
    for name in _NAMES:
        bucket.write(name, b"")

    assert list(bucket.list(start_offset="a/c/e")) == [n for n in sorted(_NAMES) if n >= "a/c/e"]
    assert list(bucket.list(start_offset="a/d")) == ["a0", *_NAMES[6:]]
    events = "users/u1/events/"
    assert list(bucket.list(events, start_offset=events + "000000000003")) == [_NAMES[8]]
    assert list(bucket.list(events, start_offset=events + "000000000010.json")) == [_NAMES[8]]
    assert list(bucket.list(events, start_offset="users/v")) == []


def test_delete_removes_the_object(bucket: Bucket) -> None:
    bucket.write("users/u1/jobs/j1/status.json", b"{}")
    bucket.write("users/u1/jobs/j1/job.log", b"log")

    bucket.delete("users/u1/jobs/j1/status.json")

    with pytest.raises(ObjectNotFound):
        bucket.read("users/u1/jobs/j1/status.json")
    assert list(bucket.list("users/")) == ["users/u1/jobs/j1/job.log"]
    assert bucket.delete_prefix("users/u1/") == 1
    assert list(bucket.list()) == []
    bucket.create("users/u1/jobs/j1/status.json", b"again")  # a deleted name can be created again


def test_stat_reports_size_and_md5(bucket: Bucket) -> None:
    payload = os.urandom(100_003)
    written = bucket.write("weights.bin", payload)

    stat = bucket.stat("weights.bin")

    assert is_the_written(stat, written)
    assert (stat.name, stat.size, stat.md5_hex) == ("weights.bin", 100_003, hashlib.md5(payload).hexdigest())


def test_upload_streams_a_large_object_from_a_file_or_chunks(bucket: Bucket, tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    source.write_bytes(os.urandom(20 * 1024 * 1024 + 13))
    digest = hashlib.md5(source.read_bytes()).hexdigest()

    with source.open("rb") as f:
        from_file = bucket.upload("models/m1/weights/model.safetensors", f)
    with source.open("rb") as f:
        chunks = iter(lambda: f.read(3_000_001), b"")
        from_chunks = bucket.upload("models/m2/weights/model.safetensors", chunks)

    for name, stat in [
        ("models/m1/weights/model.safetensors", from_file),
        ("models/m2/weights/model.safetensors", from_chunks),
    ]:
        assert (stat.size, stat.md5_hex) == (source.stat().st_size, digest)
        with bucket.open_read(name) as f:
            assert hashlib.file_digest(f, "md5").hexdigest() == digest


_BAD_NAMES = ["", "/abs", "a/../b", "..", "a/..", "./a", "a//b", "a/", "a\\b", "a\x00b", "a\nb", "x" * 1025]


@pytest.mark.parametrize("name", _BAD_NAMES)
def test_bad_names_are_rejected_before_any_io(bucket: Bucket, name: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: bucket.write(name, b"x"),
        lambda: bucket.create(name, b"x"),
        lambda: bucket.read(name),
        lambda: bucket.stat(name),
        lambda: bucket.delete(name),
        lambda: bucket.open_read(name),
        lambda: bucket.upload(name, [b"x"]),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert list(bucket.list()) == []


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", "a//", "a\\"])
def test_bad_list_prefixes_are_rejected(bucket: Bucket, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(bucket.list(prefix))


# -- several OS processes at once -------------------------------------------------


def _race_creates(url: str, names: list[str], me: int, barrier: object, results: object) -> None:
    bucket = open_bucket(url)
    barrier.wait()  # type: ignore[attr-defined]
    results.put((me, create_each(bucket, names, me)))  # type: ignore[attr-defined]


def _count_up(url: str, name: str, times: int, barrier: object) -> None:
    bucket = open_bucket(url)
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(times):
        while True:
            data, stat = bucket.read_with_stat(name)
            try:
                bucket.write(name, str(int(data) + 1).encode(), if_generation_match=stat.generation)
                break
            except PreconditionFailed:
                continue


def _run(target: Callable[..., None], args_for: Callable[[int], tuple[object, ...]], n: int) -> None:
    procs = [_FORK.Process(target=target, args=args_for(i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n


def test_concurrent_create_only_has_exactly_one_winner_per_name(bucket: Bucket) -> None:
    writers, names = 6, [f"platform/events/{i:012d}.json" for i in range(25)]
    barrier, results = _FORK.Barrier(writers), _FORK.Queue()

    _run(_race_creates, lambda me: (bucket.url, names, me, barrier, results), writers)

    winners: dict[str, list[int]] = {name: [] for name in names}
    for _ in range(writers):
        me, won = results.get(timeout=10)
        for name in won:
            winners[name].append(me)
    assert all(len(w) == 1 for w in winners.values()), winners
    for name, (me,) in winners.items():
        assert bucket.read(name) == f"writer-{me}".encode()


def test_concurrent_compare_and_swap_loses_no_update(bucket: Bucket) -> None:
    writers, times = 4, 15
    bucket.write("counter", b"0")
    barrier = _FORK.Barrier(writers)

    _run(_count_up, lambda _: (bucket.url, "counter", times, barrier), writers)

    assert bucket.read("counter") == str(writers * times).encode()


def _overwrite(url: str, name: str, payloads: list[bytes], stop: object) -> None:
    bucket = open_bucket(url)
    i = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        i += 1
        bucket.write(name, payloads[i % len(payloads)])


def test_readers_never_see_a_partial_object(bucket: Bucket) -> None:
    payloads = [bytes([i]) * (1024 * 1024) for i in range(3)]
    bucket.write("big", payloads[0])
    stop = _FORK.Event()
    writer = _FORK.Process(target=_overwrite, args=(bucket.url, "big", payloads, stop))
    writer.start()
    seen = set()
    reads, deadline = 0, time.monotonic() + 60
    try:  # at least 60 reads, and on until the writer (slow to start on a loaded machine) replaced it
        while reads < 60 or (len({first for first, _ in seen}) < 2 and time.monotonic() < deadline):
            data, stat = bucket.read_with_stat("big")
            assert data in payloads
            assert stat.md5_hex == hashlib.md5(data).hexdigest()
            seen.add((data[0], stat.generation))
            reads += 1
    finally:
        stop.set()
        writer.join(timeout=60)
    assert writer.exitcode == 0
    assert len({first for first, _ in seen}) > 1  # the writer really replaced it under the reader
    assert len({gen for _, gen in seen}) == len(seen)  # one generation, one content


# -- opening buckets ---------------------------------------------------------------


def test_open_bucket_maps_urls_to_implementations(tmp_path: Path) -> None:
    by_url = open_bucket((tmp_path / "my bucket").as_uri())
    by_path = open_bucket(str(tmp_path / "my bucket"))
    by_url.write("x", b"1")

    assert isinstance(by_url, LocalBucket) and isinstance(by_path, LocalBucket)
    assert by_path.read("x") == b"1"
    assert open_bucket(by_url.url).read("x") == b"1"
    assert open_bucket(f"{by_url.url}?fsync=1").write("y", b"2").size == 1
    for bad in ["s3://bucket/x", "file://host/path", f"{by_url.url}?nope=1", "gs://ab"]:
        with pytest.raises(ValueError):
            open_bucket(bad)


def test_a_gs_url_prefix_is_transparent(gcs_bucket: Bucket) -> None:
    inner = open_bucket(f"{gcs_bucket.url}/tenants/t1")
    inner.create("users/u1/a.json", b"a")

    assert inner.url == f"{gcs_bucket.url}/tenants/t1"
    assert list(inner.list()) == ["users/u1/a.json"]
    assert inner.stat("users/u1/a.json").name == "users/u1/a.json"
    assert gcs_bucket.read("tenants/t1/users/u1/a.json") == b"a"
    assert list(inner.list(start_offset="users/u1/b")) == []


def test_gcs_parallel_reads_keep_their_connections(
    gcs_bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    """The event store reads with 16 threads: requests' pool of 10 dropped the others' connections."""
    from storage.eventstore.log import _REMOTE_READERS, read_many

    names = [f"p/events/{i:012d}.json" for i in range(1, 4 * _REMOTE_READERS + 1)]
    for name in names:
        gcs_bucket.create(name, name.encode())
    reader = open_bucket(gcs_bucket.url)  # fresh connections: a pool not yet filled

    with caplog.at_level("WARNING", logger="urllib3.connectionpool"):
        for _ in range(3):
            assert list(read_many(reader, names, workers=_REMOTE_READERS)) == [n.encode() for n in names]

    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]


def test_local_bucket_keeps_its_state_out_of_the_namespace(local_bucket: LocalBucket) -> None:
    for name in _NAMES:
        local_bucket.create(name, b"x")
    local_bucket.delete("a/c/d")

    assert list(local_bucket.list()) == sorted(set(_NAMES) - {"a/c/d"})
    assert (local_bucket.root / "a/c/e").read_bytes() == b"x"  # a plain, browsable folder
    with pytest.raises(ValueError):
        local_bucket.write(".bucket/locks/00", b"x")


def test_local_generations_survive_a_restart(local_bucket: LocalBucket) -> None:
    first = local_bucket.write("x", b"1")

    reopened = LocalBucket(local_bucket.root)

    assert reopened.stat("x").generation == first.generation
    assert reopened.write("x", b"2", if_generation_match=first.generation).generation > first.generation


def test_local_generations_are_the_objects_mtimes_once_stamps_are_no_longer_read_back(
    local_bucket: LocalBucket,
) -> None:
    written = [local_bucket.write("x", str(i).encode()) for i in range(24)]

    assert local_bucket._nanoseconds  # an odd stamp was kept as set: later ones are not read back
    generations = [stat.generation for stat in written]
    assert generations == sorted(set(generations))
    mtime = (local_bucket.root / "x").stat().st_mtime_ns
    assert local_bucket.stat("x").generation == generations[-1] == mtime
    assert local_bucket.write("x", b"cas", if_generation_match=generations[-1]).generation > generations[-1]
