"""The async-to-bucket upload bridge and the deterministic tar: bounded memory, clean aborts, exact sizes."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Iterable
from typing import BinaryIO

import anyio
import pytest

from api.archive import plan_tar, tar_chunks, tar_sha256
from api.streams import tail_lines, upload_async
from storage import LocalBucket, ObjectStat
from storage.bucket import Bucket


class CountingBucket(LocalBucket):
    """A LocalBucket whose uploads record the largest chunk they were handed, and can fail."""

    fail_after: int | None = None
    largest = 0

    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        def watched() -> Iterable[bytes]:
            for i, chunk in enumerate(stream):  # type: ignore[arg-type]
                if self.fail_after is not None and i >= self.fail_after:
                    raise OSError("disk full")
                self.largest = max(self.largest, len(chunk))
                yield chunk

        return super().upload(name, watched())


async def chunks(n: int, size: int = 65536, *, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for i in range(n):
        if i == fail_at:
            raise ConnectionError("client went away")
        yield bytes([i % 256]) * size
        await anyio.sleep(0)


def test_upload_streams_every_chunk(tmp_path) -> None:
    bucket = CountingBucket(tmp_path)
    stat = anyio.run(upload_async, bucket, "a/b", chunks(64))
    data = bucket.read("a/b")
    assert stat.size == len(data) == 64 * 65536
    assert data == b"".join(bytes([i]) * 65536 for i in range(64))
    assert bucket.largest == 65536  # handed over chunk by chunk, never joined


def test_a_failing_producer_leaves_no_object(tmp_path) -> None:
    bucket = CountingBucket(tmp_path)
    with pytest.raises(ConnectionError):
        anyio.run(upload_async, bucket, "a/b", chunks(64, fail_at=10))
    assert not bucket.exists("a/b")


def test_a_failing_bucket_stops_the_producer(tmp_path) -> None:
    bucket = CountingBucket(tmp_path)
    bucket.fail_after = 3
    sent = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal sent
        async for chunk in chunks(10_000):
            sent += 1
            yield chunk

    with pytest.raises(OSError, match="disk full"):
        anyio.run(upload_async, bucket, "a/b", counted())
    assert sent < 100 and not bucket.exists("a/b")


def test_tail_lines(tmp_path) -> None:
    bucket = LocalBucket(tmp_path)
    bucket.write("log", b"a\nb\nc\nd")
    assert tail_lines(bucket, "log", 2) == (b"c\nd", 7)
    assert tail_lines(bucket, "log", 10) == (b"a\nb\nc\nd", 7)


def test_tar_is_deterministic_and_its_size_is_known_up_front(tmp_path) -> None:
    bucket: Bucket = LocalBucket(tmp_path)
    files = {"m/w/a.bin": b"x" * 1000, "m/c.json": b"{}", "m/" + "d/" * 60 + "e": b"", "m/skip.json": b"1"}
    for name, data in files.items():
        bucket.write(name, data)
    plan = plan_tar(bucket, "m/", exclude=frozenset({"m/skip.json"}))
    body = b"".join(tar_chunks(bucket, plan))
    assert len(body) == plan.size and len(body) % 512 == 0
    assert tar_sha256(bucket, plan) == hashlib.sha256(body).hexdigest()
    assert b"".join(tar_chunks(bucket, plan_tar(bucket, "m/", exclude=frozenset({"m/skip.json"})))) == body
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = tar.getmembers()
        got = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    assert got == {k.removeprefix("m/"): v for k, v in files.items() if k != "m/skip.json"}
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}


def test_tar_refuses_an_object_that_changed_meanwhile(tmp_path) -> None:
    bucket = LocalBucket(tmp_path)
    bucket.write("m/a", b"12345")
    plan = plan_tar(bucket, "m/")
    bucket.write("m/a", b"12")
    with pytest.raises(RuntimeError, match="changed"):
        b"".join(tar_chunks(bucket, plan))
