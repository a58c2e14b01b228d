"""Bridges between the async request/response side and the synchronous Bucket.

``upload_async`` feeds an async stream of chunks to ``Bucket.upload`` running
in a worker thread through a small bounded queue, so a large body is never
held whole in memory; an error on either side aborts the other (an aborted
upload leaves no object). ``follow_text`` tails a growing object.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import anyio
import anyio.to_thread

from storage.bucket import Bucket, ObjectNotFound, ObjectStat

__all__ = ["NO_COMPRESSION", "follow_object", "read_from", "tail_lines", "upload_async"]

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


Names = str | Sequence[str]
"""One object, or several read as one: their contents one after the other (e.g. a job's log, one
object per attempt); a name with no object yet reads as empty."""


def _names(names: Names) -> Sequence[str]:
    return (names,) if isinstance(names, str) else names


def tail_lines(bucket: Bucket, names: Names, count: int) -> tuple[bytes, int]:
    """The last ``count`` lines of ``names`` and their size (read in one pass); ObjectNotFound when
    none of them exists."""
    from collections import deque

    lines: deque[bytes] = deque(maxlen=count)
    size = 0
    found = False
    for name in _names(names):
        try:
            fh = bucket.open_read(name)
        except ObjectNotFound:
            continue
        found = True
        with fh:
            for line in fh:
                size += len(line)
                lines.append(line)
    if not found:
        raise ObjectNotFound(", ".join(_names(names)))
    return b"".join(lines), size


async def follow_object(
    bucket: Bucket,
    names: Names | Callable[[], Names],
    *,
    offset: int,
    finished: Callable[[], bool],
    poll_s: float = 0.5,
    max_s: float = 3600.0,
) -> AsyncIterator[bytes]:
    """Yield what is appended to ``names`` after ``offset`` until ``finished()`` and nothing more is new
    (``names`` may be a function, asked again at each poll: e.g. a job's attempts so far)."""
    waited = 0.0
    while waited < max_s:
        done = await anyio.to_thread.run_sync(finished)
        now = names() if callable(names) else names
        data = await anyio.to_thread.run_sync(read_from, bucket, now, offset)
        if data:
            offset += len(data)
            yield data
            continue
        if done:
            return
        await anyio.sleep(poll_s)
        waited += poll_s


def read_from(bucket: Bucket, names: Names, offset: int) -> bytes:
    """Up to a megabyte of ``names`` from ``offset`` (b"" when there is nothing new or no object yet)."""
    for name in _names(names):
        try:
            fh = bucket.open_read(name)
        except ObjectNotFound:
            continue
        with fh:
            size = fh.seek(0, 2)
            if offset >= size:
                offset -= size
                continue
            fh.seek(offset)
            return fh.read(1 << 20)
    return b""
