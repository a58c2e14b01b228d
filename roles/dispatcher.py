"""The dispatcher on its own: ``tune run dispatcher``.

Launches the jobs any API process submits, on the local-subprocess backend: it follows every
user partition (its change feed, ``TUNE_CHANGE_FEED``) and reads the events committed there
since it last looked; a job whose events moved and that is waiting (``submitted``, ``queued``,
``retrying``: a submission, or a retry the ledger decided) is handed to the ``Dispatcher``, which
checks the job's own events before anything. A stop request needs nothing from here: the
job's runner reads its job's events (``stopping``) and a queued job is stopped by the request.
On start the jobs the views show waiting are submitted (``runners.recovery``), after the heads
were taken, so nothing committed in between is missed.

The runners' heartbeats (relayed from their stdout) are published to ``--heartbeats``, where
the ledger role (``roles.ledger``) reads them; both derive each attempt's secret from the
platform's heartbeat key (``TUNE_HEARTBEAT_KEY``, or the home's).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from domain.job_states import WAITING_STATES
from runners.dispatcher import Dispatcher, local_dispatcher
from runners.recovery import resubmit_waiting
from runtime.context import Runtime
from runtime.settings import Settings, heartbeat_key_of, ledger_of
from storage import layout
from storage.heartbeats import open_heartbeat_transport

__all__ = ["SubmissionFollower", "run_dispatcher"]

log = logging.getLogger("roles.dispatcher")


class SubmissionFollower:
    """Reads what each user partition committed since its last look; submits the waiting jobs it moved.

    Args:
        runtime: the bucket's applications.
        dispatcher: where waiting jobs go (``submit`` is safe to call for a job it knows).
    """

    def __init__(self, runtime: Runtime, dispatcher: Dispatcher) -> None:
        self.runtime = runtime
        self.dispatcher = dispatcher
        self._after: dict[str, int] = {}
        self._lock = threading.Lock()

    def mark_heads(self) -> None:
        """Start every known user partition at its head (what is waiting there now is resubmitted
        from the views)."""
        for partition in self.runtime.all_partitions():
            if partition != layout.PLATFORM:
                self._after[partition] = self.runtime.projector.head(partition)

    def changed(self, partition: str) -> None:
        if partition == layout.PLATFORM:
            return
        from projections.replay import read_events

        user_id = layout.user_of(partition)
        app = self.runtime.user_app(user_id)
        with self._lock:
            after = self._after.get(partition, 0)
            moved: dict[object, None] = {}
            for position, event in read_events(app, after):
                after = position
                if type(event).__qualname__.startswith("Job."):
                    moved[event.originator_id] = None
            self._after[partition] = after
        for originator_id in moved:
            job_id = app.repository.get(originator_id).job_id
            if app.get_job(job_id).state in WAITING_STATES:
                self.dispatcher.submit(user_id, job_id)


def run_dispatcher(
    settings: Settings,
    *,
    heartbeats: str,
    max_concurrent: int = 1,
    runner_module: str = "runners.job_runner",
) -> None:
    """Dispatch submitted jobs until SIGTERM or SIGINT (then stop the runs gracefully)."""
    import sys

    from runners.backends import LaunchRequest

    runtime = Runtime(settings)
    ledger_of(settings, runtime.bucket, role="dispatcher")
    transport = open_heartbeat_transport(heartbeats)
    publisher = transport.publisher()

    def runner_argv(request: LaunchRequest) -> list[str]:
        return [sys.executable, "-m", runner_module, request.bucket_url, request.run_object]

    dispatcher = local_dispatcher(
        runtime.bucket,
        heartbeats=publisher,
        log_dir=Path(settings.home) / "runs",
        runner_env={"TUNE_HOME": str(settings.home)},
        open_app=runtime.user_app,
        clock=runtime.clock,
        max_concurrent=max_concurrent,
        heartbeat_key=heartbeat_key_of(settings),
        platform=runtime.platform,
        argv=runner_argv,
    )
    follower = SubmissionFollower(runtime, dispatcher)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follower.mark_heads()
    requeued = resubmit_waiting(dispatcher, runtime.bucket)
    runtime.follow(runtime.change_feed(runtime.all_partitions), follower.changed)
    log.info("dispatcher: %d job(s) requeued, following %s", requeued, settings.change_feed)
    dispatcher.run(stop)
    runtime.stop()
    dispatcher.close()
    publisher.close()
