"""``DirectTransport``: heartbeats through an in-process queue (the embedded default).

Publishers append to one FIFO; the single active subscriber takes up to
``max_batch`` at a time and keeps them in flight until its handler returns.
A batch released on close goes back to the front of the queue, so the next
subscriber sees it first and per-job order holds. The queue is unbounded
(heartbeats are small; a stalled ledger shows up as a growing ``pending()``).
Publisher and subscriber must live in the same process.
"""

from __future__ import annotations

import collections
import threading

from storage.heartbeats.heartbeat import Heartbeat
from storage.heartbeats.transport import (
    HeartbeatPublisher,
    HeartbeatSubscriber,
    HeartbeatTransport,
    PollingSubscriber,
)

__all__ = ["DirectTransport"]


class DirectTransport(HeartbeatTransport):
    """An in-process channel: thread-safe, many publishers, one subscriber at a time."""

    def __init__(self, name: str = "") -> None:
        self.url = f"direct://{name}"
        self._queue: collections.deque[Heartbeat] = collections.deque()
        self._ready = threading.Condition()
        self._subscribed = False

    def publisher(self) -> HeartbeatPublisher:
        return _DirectPublisher(self)

    def subscriber(self, *, max_batch: int = 500, retry_delay_s: float = 0.05) -> HeartbeatSubscriber:
        return _DirectSubscriber(self, max_batch=max_batch, retry_delay_s=retry_delay_s)

    def pending(self) -> int:
        """Heartbeats published and not yet taken by a subscriber."""
        with self._ready:
            return len(self._queue)

    def _put(self, heartbeat: Heartbeat) -> None:
        with self._ready:
            self._queue.append(heartbeat)
            self._ready.notify()

    def _take(self, max_batch: int, timeout: float, stop: threading.Event) -> list[Heartbeat] | None:
        with self._ready:
            self._ready.wait_for(lambda: self._queue or stop.is_set(), timeout)
            if stop.is_set() or not self._queue:
                return None
            n = min(max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _give_back(self, batch: list[Heartbeat]) -> None:
        with self._ready:
            self._queue.extendleft(reversed(batch))
            self._ready.notify()

    def _wake_all(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _claim(self) -> None:
        with self._ready:
            if self._subscribed:
                raise RuntimeError(f"{self.url} already has an active subscriber")
            self._subscribed = True

    def _unclaim(self) -> None:
        with self._ready:
            self._subscribed = False


class _DirectPublisher(HeartbeatPublisher):
    def __init__(self, transport: DirectTransport) -> None:
        self._transport = transport
        self._closed = False

    def publish(self, heartbeat: Heartbeat) -> None:
        if self._closed:
            raise RuntimeError("publisher is closed")
        self._transport._put(heartbeat)

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to wait for: ``publish`` has already queued the heartbeat."""

    def close(self) -> None:
        self._closed = True


class _DirectSubscriber(PollingSubscriber[list[Heartbeat]]):
    def __init__(self, transport: DirectTransport, *, max_batch: int, retry_delay_s: float) -> None:
        super().__init__(max_batch=max_batch, retry_delay_s=retry_delay_s)
        self._transport = transport
        self._claimed = False

    def _open(self) -> None:
        self._transport._claim()
        self._claimed = True

    def _receive(self, max_batch: int, timeout: float) -> list[Heartbeat] | None:
        return self._transport._take(max_batch, timeout, self._stop)

    def _wake(self) -> None:
        self._transport._wake_all()

    def _heartbeats(self, batch: list[Heartbeat]) -> list[Heartbeat]:
        return batch

    def _ack(self, batch: list[Heartbeat]) -> None:
        """Taken off the queue already: dropping the batch is the ack."""

    def _release(self, batch: list[Heartbeat]) -> None:
        self._transport._give_back(batch)

    def _shutdown(self) -> None:
        if self._claimed:
            self._claimed = False
            self._transport._unclaim()
