"""Run the ledger on its own (the production role): ``python -m roles.ledger``.

::

    python -m roles.ledger --bucket gs://tune-prod --heartbeats pubsub://proj/heartbeats/ledger

Consumes heartbeats from ``--heartbeats`` (``pubsub://project/topic/subscription``; with
``--create`` the topic and ordered subscription are made first) and writes metered usage,
alerts and stop requests to the event log in ``--bucket``. Projections are another
process's job (told by the bucket's object notifications); ``--project`` also runs a
projector here, for a single-machine setup. Only heartbeats signed with their attempt's secret
are metered: the ledger derives it from the platform's heartbeat key, ``TUNE_HEARTBEAT_KEY`` (or
``$TUNE_HOME/heartbeat_key``), which must be the dispatchers' key. On start, running jobs found
in the views are watched for heartbeats, so a runner that died while the ledger was down is still found
lost. SIGTERM or SIGINT: finish the batch in hand, ack it, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta

from runners.ledger.usage_runs import CLOCK_BOUND
from runners.ledger.worker import LedgerWorker
from runtime.settings import Settings, heartbeat_key_of, ledger_of
from storage import open_bucket
from storage.eventstore.apps import PartitionApps
from storage.heartbeats import open_heartbeat_transport

__all__ = ["main"]

log = logging.getLogger("roles.ledger")

USER_APP_CACHE = "1000"
"""Aggregates each UserApp caches (fast-forwarded): lost-job checks and the projector skip replays."""


def _parse(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m roles.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--bucket", default=settings.bucket_url, help="default $TUNE_BUCKET")
    parser.add_argument("--heartbeats", required=True, help="pubsub://project/topic/subscription")
    parser.add_argument("--create", action="store_true", help="create the topic and subscription if missing")
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--flush-interval", type=float, default=0.2, help="seconds; see LedgerWorker")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between lost-job sweeps")
    parser.add_argument(
        "--clock-bound",
        type=float,
        default=CLOCK_BOUND.total_seconds(),
        help="seconds a heartbeat's time may be from the ledger's; beyond, it is metered at receipt",
    )
    parser.add_argument("--project", action="store_true", help="also run a projector in this process")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.from_env()
    args = _parse(argv, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bucket = open_bucket(args.bucket)
    ledger_of(settings, bucket, role="ledger")  # its own key (TUNE_SIGNING_KEY), witnessed if TUNE_WITNESS
    transport = open_heartbeat_transport(args.heartbeats, create=args.create)
    apps = PartitionApps(bucket, AGGREGATE_CACHE_MAXSIZE=USER_APP_CACHE)
    stop = threading.Event()
    projector = None
    if args.project:
        from projections.projector import Projector

        projector = Projector(bucket, apps)
        projector.start(stop, sweep_every=30.0)
    worker = LedgerWorker(
        bucket,
        apps.platform(),
        apps.user,
        transport.subscriber(max_batch=args.max_batch),
        projector,
        heartbeat_key=heartbeat_key_of(settings),
        flush_interval_s=args.flush_interval,
        sweep_interval_s=args.sweep_interval,
        clock_bound=timedelta(seconds=args.clock_bound),
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
