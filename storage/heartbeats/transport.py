"""The heartbeat transport interface and the delivery loop every subscriber shares.

::

    HeartbeatTransport        .publisher() / .subscriber(): one pair per URL
    HeartbeatPublisher        publish(hb), flush(), close()
    HeartbeatSubscriber       start(handler), close()
    HeartbeatPublishError     flush() found heartbeats that were not sent (``.failed``)

Delivery is at least once, in order per job. A subscriber hands the handler
batches (``handler(list[Heartbeat]) -> None``) and acknowledges a batch only
after the handler returns. When the handler raises, the subscriber logs it and
calls it again with the same batch (backing off), so a job's heartbeats are
never handled out of order; a batch still unhandled when the subscriber closes
is released to the next subscriber. Duplicates are the consumer's to drop, by
``Heartbeat.key``.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from storage.heartbeats.heartbeat import Heartbeat

__all__ = [
    "Handler",
    "HeartbeatPublishError",
    "HeartbeatPublisher",
    "HeartbeatSubscriber",
    "HeartbeatTransport",
    "PollingSubscriber",
    "TransportError",
]

log = logging.getLogger(__name__)

Handler = Callable[[list[Heartbeat]], None]
T = TypeVar("T")


class TransportError(Exception):
    """The transport (e.g. Pub/Sub) failed; the delivery loop retries after a pause."""


class HeartbeatPublishError(Exception):
    """Some heartbeats were not published; republish ``failed`` (same seq: consumers dedupe)."""

    def __init__(self, failed: Sequence[Heartbeat], cause: BaseException | None = None) -> None:
        super().__init__(f"{len(failed)} heartbeat(s) not published: {cause!r}")
        self.failed = list(failed)


class HeartbeatPublisher(abc.ABC):
    """Sends heartbeats; thread-safe. Use as a context manager to close it."""

    @abc.abstractmethod
    def publish(self, heartbeat: Heartbeat) -> None:
        """Queue ``heartbeat`` for sending (may batch); RuntimeError once closed."""

    @abc.abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything published so far is sent; HeartbeatPublishError lists what was not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush, then release resources; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeartbeatSubscriber(abc.ABC):
    """Delivers heartbeats to one handler on a background thread."""

    held_back_s: float = 0.0
    """How long heartbeats that a subscriber which died had received (unacked) may stay held back
    from the next one (Pub/Sub: the ack deadline, and a job's later heartbeats wait behind them on
    its ordering key). A restarted ledger gives running jobs this long before finding them lost."""

    @abc.abstractmethod
    def start(self, handler: Handler) -> None:
        """Begin delivering batches to ``handler``; RuntimeError if already started."""

    @abc.abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """Stop: the batch in hand finishes (and is acked) or is released; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class HeartbeatTransport(abc.ABC):
    """One channel of heartbeats: many publishers, one subscriber at a time."""

    url: str

    @abc.abstractmethod
    def publisher(self) -> HeartbeatPublisher:
        """A new publisher on this channel."""

    @abc.abstractmethod
    def subscriber(self, *, max_batch: int = 500, retry_delay_s: float = 0.05) -> HeartbeatSubscriber:
        """A new subscriber; each handler call gets at most ``max_batch`` heartbeats, and a
        failed handler is called again after ``retry_delay_s``, doubling up to 5 s."""


class PollingSubscriber(HeartbeatSubscriber, Generic[T]):
    """The shared loop: receive a batch, hand it over until the handler succeeds, ack.

    Subclasses implement ``_receive`` (a batch, or None after ``poll_s``),
    ``_heartbeats``, ``_ack``, ``_release`` (give back unhandled), and may
    implement ``_open`` (before the thread starts), ``_wake`` (end a waiting
    ``_receive`` on close), ``_extend`` (keep holding a batch while its handler
    is retried) and ``_shutdown``.
    """

    poll_s = 0.5  # how long one receive waits; also bounds how long close() waits for an idle loop
    max_retry_delay_s = 5.0

    def __init__(self, *, max_batch: int, retry_delay_s: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.retry_delay_s = retry_delay_s
        self.handler_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self, handler: Handler) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                raise RuntimeError("subscriber already started or closed")
            self._open()
            self._thread = threading.Thread(target=self._run, args=(handler,), name="heartbeat-subscriber",
                                            daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._shutdown()

    def _run(self, handler: Handler) -> None:
        pause = self.retry_delay_s
        while not self._stop.is_set():
            try:
                batch = self._receive(self.max_batch, self.poll_s)
            except TransportError:
                log.exception("heartbeat receive failed; retrying in %.2f s", pause)
                self._stop.wait(pause)
                pause = min(pause * 2, self.max_retry_delay_s)
                continue
            pause = self.retry_delay_s
            if batch is not None:
                self._deliver(handler, batch)

    def _deliver(self, handler: Handler, batch: T) -> None:
        heartbeats = self._heartbeats(batch)
        delay = self.retry_delay_s
        while True:
            try:
                handler(list(heartbeats))
            except Exception:  # the handler's failure must not stop delivery: log, retry the same batch
                self.handler_failures += 1
                log.exception("heartbeat handler failed on %d heartbeat(s); retrying in %.2f s",
                              len(heartbeats), delay)
            else:
                self._guard(self._ack, batch)
                return
            if self._stop.wait(delay):
                self._guard(self._release, batch)
                return
            delay = min(delay * 2, self.max_retry_delay_s)
            self._guard(self._extend, batch)

    @staticmethod
    def _guard(action: Callable[[T], None], batch: T) -> None:
        """Ack/release/extend; a failure only means the batch comes back later (at least once)."""
        try:
            action(batch)
        except TransportError:
            log.exception("heartbeat %s failed; the batch may be delivered again", action.__name__)

    @abc.abstractmethod
    def _receive(self, max_batch: int, timeout: float) -> T | None: ...

    @abc.abstractmethod
    def _heartbeats(self, batch: T) -> list[Heartbeat]: ...

    @abc.abstractmethod
    def _ack(self, batch: T) -> None: ...

    @abc.abstractmethod
    def _release(self, batch: T) -> None: ...

    def _open(self) -> None:
        """Claim what the loop needs before it starts (default: nothing)."""

    def _wake(self) -> None:
        """Cut short a ``_receive`` that is waiting, once ``_stop`` is set (default: let it time out)."""

    def _extend(self, batch: T) -> None:
        """Keep holding ``batch`` while its handler is retried (default: nothing to do)."""

    def _shutdown(self) -> None:
        """Release resources after the loop has stopped (default: nothing to do)."""
