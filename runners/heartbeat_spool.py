"""A runner's heartbeats when its control plane may be gone: nothing undelivered is lost, and the
runner hears of the failure.

``SpoolingPublisher`` wraps the attempt's publisher. A heartbeat the transport refuses (a
``publish`` that raises, e.g. ``BrokenPipeError`` on the stdout pipe of a ``tune serve`` that
was killed; or one ``flush`` reports failed, e.g. Pub/Sub) is kept instead of raised, so the
emitter carries on and the runner's after-heartbeat checks still run. The wrapper tells the
runner what it saw:

- ``gone``: the transport answered that its reader is gone for good (the pipe is broken);
- ``failed_in_a_row``: heartbeat intervals in a row whose heartbeats could not be published.

When the attempt ends its runner writes what was kept (``write``) as one create-only object,
``users/<uid>/unsent-heartbeats/<jid>/<n>.jsonl`` (``storage.layout.unsent_heartbeats``): one
heartbeat per line, exactly as it was signed. The ledger meters such spools when it starts and
when it finds one later (``runners.ledger.spools``), dropping repeats by ``(job, attempt, seq)``
as for any redelivery, so a heartbeat that reached the ledger too is billed once.
"""

from __future__ import annotations

import logging
import threading

from storage import AlreadyExists, Bucket
from storage.heartbeats import Heartbeat, HeartbeatPublisher, HeartbeatPublishError, encode_heartbeat

__all__ = ["SpoolingPublisher"]

log = logging.getLogger(__name__)


class SpoolingPublisher(HeartbeatPublisher):
    """``inner`` that keeps what it cannot deliver (see the module docstring); thread-safe."""

    def __init__(self, inner: HeartbeatPublisher) -> None:
        self.inner = inner
        self.gone: str | None = None
        """Why the transport's reader is gone for good (None: not known to be)."""
        self.failed_in_a_row = 0
        self._unsent: dict[tuple[str, int, int], Heartbeat] = {}
        self._failed_since_check = False
        self._lock = threading.Lock()

    @property
    def unsent(self) -> list[Heartbeat]:
        """The heartbeats kept so far, in ``(attempt, seq)`` order."""
        with self._lock:
            return [self._unsent[key] for key in sorted(self._unsent, key=lambda k: (k[1], k[2]))]

    def publish(self, heartbeat: Heartbeat) -> None:
        if self.gone is not None:
            self._keep([heartbeat])
            return
        try:
            self.inner.publish(heartbeat)
        except OSError as exc:  # a broken pipe or a reset connection: nobody reads there any more
            self.gone = f"{type(exc).__name__}: {exc}"
            log.error("heartbeats of %s cannot be delivered: %s", heartbeat.job_id, self.gone)
            self._keep([heartbeat])
        except Exception as exc:
            log.warning("heartbeat %s not published (kept): %s", heartbeat.key, exc)
            self._keep([heartbeat])

    def flush(self, timeout: float | None = None) -> None:
        """Wait for what was published; what failed is kept (never raised)."""
        if self.gone is not None:
            return
        try:
            self.inner.flush(timeout)
        except HeartbeatPublishError as exc:
            log.warning("%d heartbeat(s) not published (kept): %s", len(exc.failed), exc)
            self._keep(exc.failed)
        except TimeoutError:
            pass  # still being sent: the next check sees how it went
        except OSError as exc:
            self.gone = f"{type(exc).__name__}: {exc}"

    def check(self, timeout: float) -> None:
        """Once per heartbeat interval: learn how this interval's heartbeats went (a transport that
        answers later, like Pub/Sub, within ``timeout``) and count the intervals that failed."""
        self.flush(timeout)
        with self._lock:
            self.failed_in_a_row = self.failed_in_a_row + 1 if self._failed_since_check else 0
            self._failed_since_check = False

    def close(self) -> None:
        try:
            self.inner.close()
        except Exception as exc:  # closing a dead transport must not hide what was kept
            log.warning("closing the heartbeat publisher failed: %s", exc)

    def write(self, bucket: Bucket, name: str) -> int:
        """Write the kept heartbeats to the create-only object ``name``; return how many (0: no object)."""
        unsent = self.unsent
        if not unsent:
            return 0
        data = b"".join(encode_heartbeat(h) + b"\n" for h in unsent)
        try:
            bucket.create(name, data)
        except AlreadyExists:  # never overwritten: a spool is evidence as it was first written
            log.error("%s exists already: %d unsent heartbeat(s) not written", name, len(unsent))
            return 0
        return len(unsent)

    def _keep(self, heartbeats: list[Heartbeat]) -> None:
        with self._lock:
            for heartbeat in heartbeats:
                self._unsent.setdefault(heartbeat.key, heartbeat)
            self._failed_since_check = True
