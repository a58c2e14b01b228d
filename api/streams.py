"""Bridges between the async request/response side and the synchronous Bucket.

``upload_async`` feeds an async stream of chunks to ``Bucket.upload`` running
in a worker thread through a small bounded queue, so a large body is never
held whole in memory; an error on either side aborts the other (an aborted
upload leaves no object). ``follow_text`` tails a growing object.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.to_thread

from storage.bucket import Bucket, ObjectNotFound, ObjectStat

__all__ = ["follow_object", "tail_lines", "upload_async"]

_QUEUE_CHUNKS = 16
_DONE = object()


class _Aborted(Exception):
    """The producer stopped early; the upload must not complete."""


def _drain(q: queue.Queue[object]) -> Iterator[bytes]:
    while True:
        item = q.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise _Aborted("upload aborted") from item
        yield item  # type: ignore[misc]


async def upload_async(bucket: Bucket, name: str, chunks: AsyncIterator[bytes]) -> ObjectStat:
    """Stream ``chunks`` into object ``name``; re-raise whatever stopped ``chunks``."""
    q: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    result: list[ObjectStat] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            result.append(bucket.upload(name, _drain(q)))
        except BaseException as exc:
            failure.append(exc)
            while True:  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    break

    async def put(item: object) -> None:
        while not failure:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                await anyio.to_thread.run_sync(_put_timeout, q, item)
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, consume)
        try:
            async for chunk in chunks:
                if failure:
                    break
                if chunk:
                    await put(chunk)
        except BaseException as exc:
            await put(exc)
            raise
        else:
            await put(_DONE)
    if failure:
        raise failure[0]
    return result[0]


def _put_timeout(q: queue.Queue[object], item: object) -> None:
    """Put, giving up (silently) if the consumer died and nobody drains the queue."""
    with contextlib.suppress(queue.Full):
        q.put(item, timeout=60)


def tail_lines(bucket: Bucket, name: str, count: int) -> tuple[bytes, int]:
    """The last ``count`` lines of object ``name`` and the object's size (read in one pass)."""
    from collections import deque

    lines: deque[bytes] = deque(maxlen=count)
    size = 0
    with bucket.open_read(name) as fh:
        for line in fh:
            size += len(line)
            lines.append(line)
    return b"".join(lines), size


async def follow_object(
    bucket: Bucket,
    name: str,
    *,
    offset: int,
    finished: Callable[[], bool],
    poll_s: float = 0.5,
    max_s: float = 3600.0,
) -> AsyncIterator[bytes]:
    """Yield what is appended to ``name`` after ``offset`` until ``finished()`` and nothing more is new."""
    waited = 0.0
    while waited < max_s:
        done = await anyio.to_thread.run_sync(finished)
        data = await anyio.to_thread.run_sync(_read_from, bucket, name, offset)
        if data:
            offset += len(data)
            yield data
            continue
        if done:
            return
        await anyio.sleep(poll_s)
        waited += poll_s


def _read_from(bucket: Bucket, name: str, offset: int) -> bytes:
    """Up to a megabyte of ``name`` from ``offset`` (b"" when there is nothing new or no object yet)."""
    try:
        fh = bucket.open_read(name)
    except ObjectNotFound:
        return b""
    with fh:
        fh.seek(offset)
        return fh.read(1 << 20)
