"""The projector on its own: ``tune run projector``.

Folds every partition that moves, whoever wrote it (runners, the ledger, the dispatcher, the
admin CLI), into its views: its change feed (``TUNE_CHANGE_FEED``: ``poll`` checks the head of
the platform's partition and of every user's; ``pubsub://...`` follows the bucket's object
notifications, with the head check as a slow backstop) tells it which. Several may run on
one bucket (views are written with preconditions and never move backwards). It folds
``WORKERS`` partitions at once: a catch-up mostly waits on the bucket, and folded one by one, a
burst of submissions by many users queued each partition behind the others' writes (20 users on
2 cores, ``bench/bench_topology.py``: seconds). SIGTERM or SIGINT: write the deferred listings,
exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading

from runtime.context import Runtime
from runtime.settings import Settings, ledger_of

__all__ = ["WORKERS", "run_projector"]

log = logging.getLogger("roles.projector")

WORKERS = 4
"""Partitions the projector folds at once (each partition by one thread at a time)."""


def run_projector(settings: Settings) -> None:
    """Project every partition that moves until SIGTERM or SIGINT."""
    runtime = Runtime(settings, projector_workers=WORKERS)
    ledger_of(settings, runtime.bucket, role="projector")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start(follow=False)
    runtime.follow(runtime.change_feed(runtime.all_partitions), runtime.projector.notify)
    log.info("projector: %s, following %s", settings.bucket_url, settings.change_feed)
    stop.wait()
    runtime.stop()
