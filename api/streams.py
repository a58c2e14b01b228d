"""Bridges between the async request/response side and the synchronous Bucket.

``upload_async`` feeds an async stream of chunks to ``Bucket.upload`` running
in a worker thread through a small bounded queue, so a large body is never
held whole in memory; an error on either side aborts the other (an aborted
upload leaves no object). ``follow_text`` tails a growing object.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.to_thread

from storage.bucket import Bucket, ObjectNotFound, ObjectStat

__all__ = ["NO_COMPRESSION", "follow_object", "tail_lines", "upload_async"]

NO_COMPRESSION = "no_compression"
"""The ``opt`` key of a route whose replies the app never compresses (``opt={NO_COMPRESSION: True}``):
a streamed log is flushed as it grows, a download's size and digest headers describe its bytes."""

_QUEUE_CHUNKS = 16
_DONE = object()


class _Aborted(Exception):
    """The producer stopped early; the upload must not complete."""


class _Pipe:
    """A bounded hand-over of chunks from the event loop to a worker thread; either side may abort."""

    def __init__(self) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self.aborted = threading.Event()

    def chunks(self) -> Iterator[bytes]:
        """The consumer's side (a worker thread): chunks until done; _Aborted if the producer quit."""
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.aborted.is_set():
                    raise _Aborted("upload aborted") from None
                continue
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    async def put(self, item: object) -> None:
        """The producer's side (the event loop): wait while the queue is full, never blocking the loop."""
        while not self.aborted.is_set():
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                await anyio.sleep(0.002)


async def upload_async(bucket: Bucket, name: str, chunks: AsyncIterator[bytes]) -> ObjectStat:
    """Stream ``chunks`` into object ``name``; re-raise whatever stopped ``chunks`` or the upload."""
    pipe = _Pipe()
    result: list[ObjectStat] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            result.append(bucket.upload(name, pipe.chunks()))
        except BaseException as exc:
            failure.append(exc)
            pipe.aborted.set()

    stopped: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, consume)
        try:
            async for chunk in chunks:
                if pipe.aborted.is_set():
                    break
                if chunk:
                    await pipe.put(chunk)
            await pipe.put(_DONE)
        except Exception as exc:  # re-raised below, outside the task group (no ExceptionGroup)
            stopped = exc
            pipe.aborted.set()
        except BaseException:  # cancelled: let the worker give up too
            pipe.aborted.set()
            raise
    if stopped is not None:
        raise stopped
    if failure:
        raise failure[0]
    return result[0]


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
