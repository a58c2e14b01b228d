"""Run the ledger on its own (the production role): ``python -m runners.ledger``.

::

    python -m runners.ledger --bucket gs://tune-prod --heartbeats pubsub://proj/heartbeats/ledger

Consumes heartbeats from ``--heartbeats`` (``pubsub://project/topic/subscription``; with
``--create`` the topic and ordered subscription are made first) and writes metered usage,
alerts and stop requests to the event log in ``--bucket``. Projections are another
process's job (told by the bucket's object notifications); ``--project`` also runs a
projector here, for a single-machine setup. On start, running jobs found in the views are
watched for heartbeats, so a runner that died while the ledger was down is still found
lost. SIGTERM or SIGINT: finish the batch in hand, ack it, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runners.ledger.worker import LedgerWorker
from storage import Bucket, layout, open_bucket
from storage.heartbeats import open_heartbeat_transport

__all__ = ["cached_user_apps", "main"]

log = logging.getLogger("runners.ledger")

USER_APP_CACHE = "1000"
"""Aggregates each UserApp caches (fast-forwarded): lost-job checks and the projector skip replays."""


def cached_user_apps(bucket: Bucket) -> Callable[[str], Any]:
    """``user_id -> UserApp`` on ``bucket``, one per user, each with the aggregate cache on."""
    from storage.eventstore import open_user

    apps: dict[str, Any] = {}
    lock = threading.Lock()

    def open_app(user_id: str) -> Any:
        with lock:
            app = apps.get(user_id)
            if app is None:
                app = apps[user_id] = open_user(bucket, user_id, AGGREGATE_CACHE_MAXSIZE=USER_APP_CACHE)
            return app

    return open_app


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    home = os.path.abspath(os.path.expanduser(os.environ.get("TUNE_HOME", "~/.tune")))
    parser = argparse.ArgumentParser(prog="python -m runners.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--bucket", default=os.environ.get("TUNE_BUCKET", f"file://{home}/bucket"))
    parser.add_argument("--heartbeats", required=True, help="pubsub://project/topic/subscription")
    parser.add_argument("--create", action="store_true", help="create the topic and subscription if missing")
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--flush-interval", type=float, default=0.2, help="seconds; see LedgerWorker")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between lost-job sweeps")
    parser.add_argument("--project", action="store_true", help="also run a projector in this process")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from storage.eventstore import open_platform

    bucket = open_bucket(args.bucket)
    transport = open_heartbeat_transport(args.heartbeats, create=args.create)
    open_app = cached_user_apps(bucket)
    stop = threading.Event()
    projector = None
    if args.project:
        from projections.projector import Projector

        def open_partition(partition: str) -> Any:
            if partition == layout.PLATFORM:
                return open_platform(bucket)
            return open_app(layout.user_of(partition))

        projector = Projector(bucket, open_partition)
        projector.start(stop, sweep_every=30.0)
    worker = LedgerWorker(
        bucket,
        open_platform(bucket),
        open_app,
        transport.subscriber(max_batch=args.max_batch),
        projector,
        flush_interval_s=args.flush_interval,
        sweep_interval_s=args.sweep_interval,
    )
    watched = worker.recover()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    log.info("ledger: %s -> %s (watching %d running job(s))", transport.url, bucket.url, watched)
    stop.wait()
    worker.close()
    log.info("ledger stopped: %s", worker.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
