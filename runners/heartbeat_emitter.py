"""One runner attempt's heartbeats: one every ``interval_s`` on a thread, and a final one at close.

Heartbeats flow from ``start()`` (the attempt began) to ``close()`` (its outcome is recorded),
so the attempt looks alive while it copies files in and out. GPU time is measured on a
monotonic clock only while the GPU is held: from ``hold_gpu()`` (the trainer process starts)
to ``release_gpu()`` (it exited). Each heartbeat carries the attempt's cumulative GPU
milliseconds (``gpu_ms_total``: the whole time held so far, never less than the previous
heartbeat's), so a heartbeat that is lost or arrives late loses nothing: the next one carries
the total, and the final one is exactly the attempt's GPU time. Sequence numbers start at 1
and grow by one per heartbeat; ``(job_id, attempt, seq)`` is what consumers deduplicate by.

With its attempt's ``secret`` (``storage.heartbeats.attempt_secret``, handed to the runner by
its launch backend) every heartbeat is signed (``sign_heartbeat``) before it is published, so
the ledger can tell it from a forged one; without one it goes unsigned (and is not billed).

After each periodic heartbeat ``on_beat(heartbeat)`` runs on the emitter's thread: the job
runner uses it to report progress, upload its log and look for a stop request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from storage.clock import Clock, utc_now
from storage.heartbeats import Heartbeat, HeartbeatPublisher, HeartbeatPublishError, sign_heartbeat

__all__ = ["AttemptIdentity", "HeartbeatEmitter", "Progress"]

log = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
_FLUSH_TRIES = 3


class AttemptIdentity(NamedTuple):
    """Who a heartbeat is about and what it holds."""

    user_id: str
    job_id: str
    attempt: int
    gpu_type: str
    gpu_count: int
    lease: str | None = None


class Progress(NamedTuple):
    """The trainer's latest report."""

    step: int = 0
    loss: float | None = None
    tokens: int = 0


class HeartbeatEmitter:
    """Publishes an attempt's heartbeats.

    Args:
        publisher: where heartbeats go.
        identity: the attempt and its GPUs.
        interval_s: seconds between periodic heartbeats.
        progress: returns the latest step, loss and tokens (called at every heartbeat).
        on_beat: runs after each periodic heartbeat; its errors are logged, not raised.
        clock: wall-clock ``at`` of each heartbeat (aware UTC).
        monotonic_ns: the clock GPU time is measured on.
        secret: the attempt's heartbeat secret (None: heartbeats go unsigned).
    """

    def __init__(
        self,
        publisher: HeartbeatPublisher,
        identity: AttemptIdentity,
        *,
        interval_s: float,
        progress: Callable[[], Progress] = Progress,
        on_beat: Callable[[Heartbeat], None] | None = None,
        clock: Clock = utc_now,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        secret: str | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive (got {interval_s})")
        self.publisher = publisher
        self.identity = identity
        self.interval_s = interval_s
        self.progress = progress
        self.on_beat = on_beat
        self.clock = clock
        self.monotonic_ns = monotonic_ns
        self._secret = secret
        self.seq = 0
        self._started = False
        self._held_ns = 0  # GPU time of the closed hold intervals
        self._held_since: int | None = None  # start of the open one
        self._final: Heartbeat | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, thread: bool = True) -> None:
        """Begin the attempt's heartbeats; with ``thread``, one every ``interval_s`` until ``close``."""
        if self._started:
            raise RuntimeError("heartbeat emitter already started")
        self._started = True
        # A first heartbeat (no GPU time yet) tells the ledger the attempt is live before its first
        # interval is spent, so limits are checked before that interval, not after it.
        self._beat_and_report()
        if thread:
            self._thread = threading.Thread(
                target=self._loop, name=f"heartbeat-{self.identity.job_id}", daemon=True
            )
            self._thread.start()

    def hold_gpu(self) -> None:
        """GPU time counts from now (until ``release_gpu``)."""
        with self._lock:
            if self._held_since is None:
                self._held_since = self.monotonic_ns()

    def release_gpu(self) -> None:
        """GPU time stops counting."""
        with self._lock:
            if self._held_since is not None:
                self._held_ns += self.monotonic_ns() - self._held_since
                self._held_since = None

    def _held_ms(self) -> int:
        open_ns = 0 if self._held_since is None else self.monotonic_ns() - self._held_since
        return (self._held_ns + open_ns) // _NS_PER_MS

    def beat(self, *, final: bool = False) -> Heartbeat:
        """Publish one heartbeat now (the attempt's GPU time so far) and return it."""
        with self._lock:
            if not self._started:
                raise RuntimeError("start() the emitter before it beats")
            if self._final is not None:
                raise RuntimeError("the final heartbeat was already sent")
            held_ms = self._held_ms()
            progress = self.progress()
            self.seq += 1
            heartbeat = Heartbeat(
                user_id=self.identity.user_id,
                job_id=self.identity.job_id,
                attempt=self.identity.attempt,
                seq=self.seq,
                gpu_type=self.identity.gpu_type,
                gpu_count=self.identity.gpu_count,
                gpu_ms_total=held_ms,
                step=progress.step,
                loss=progress.loss,
                tokens=progress.tokens,
                at=self.clock(),
                final=final,
                lease=self.identity.lease,
            )
            if self._secret is not None:
                heartbeat = sign_heartbeat(heartbeat, self._secret)
            self.publisher.publish(heartbeat)  # if this raises, the next heartbeat carries the total
            if final:
                self._final = heartbeat
            return heartbeat

    def close(self) -> Heartbeat:
        """Release the GPU, stop the thread, send the final heartbeat and flush; return it."""
        self.release_gpu()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        final = self._final or self.beat(final=True)
        self._flush()
        return final

    @property
    def gpu_ms(self) -> int:
        """GPU milliseconds held so far (the latest heartbeat sent carries the total up to its time)."""
        with self._lock:
            return self._held_ms()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat_and_report()

    def _beat_and_report(self) -> None:
        try:
            heartbeat = self.beat()
        except Exception:  # a transport hiccup must not end the heartbeats; the next one carries on
            log.exception("heartbeat of %s attempt %d failed", self.identity.job_id, self.identity.attempt)
            return
        if self.on_beat is not None:
            try:
                self.on_beat(heartbeat)
            except Exception:
                log.exception("after-heartbeat work of %s failed", self.identity.job_id)

    def _flush(self) -> None:
        for _ in range(_FLUSH_TRIES):
            try:
                self.publisher.flush()
                return
            except HeartbeatPublishError as exc:
                log.warning("republishing %d heartbeat(s) of %s", len(exc.failed), self.identity.job_id)
                for heartbeat in exc.failed:
                    self.publisher.publish(heartbeat)
        self.publisher.flush()
