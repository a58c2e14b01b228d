"""Group commit: writers that need the same flush share one (the local bucket's folder fsync and its
journal's ``fdatasync``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["GroupCommit"]


class GroupCommit:
    """One flush covers every ticket given before it began.

    ``_cond`` guards ``_synced`` (every ticket up to it is on disk) and ``_syncing`` (a flush runs); a
    subclass keeps its own tickets under the same ``_cond`` and calls ``_sync_to``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._synced = 0
        self._syncing = False

    def _sync_to(self, ticket: int, given: Callable[[], int], flush: Callable[[], None]) -> None:
        """Return once ``ticket`` is on disk: if no flush runs, run one covering every ticket given so far
        (``given()``, read under ``_cond``); if one runs, wait for it and look again. N writers arriving
        together cost two flushes, not N; a failed flush covers nothing (the next writer tries again)."""
        with self._cond:
            while self._synced < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, covered, done = True, given(), False
                self._cond.release()
                try:
                    flush()
                    done = True
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    if done:
                        self._synced = max(self._synced, covered)
                    self._cond.notify_all()
