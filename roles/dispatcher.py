"""The dispatcher on its own: ``tune run dispatcher``.

Launches the jobs any API process submits, on the local-subprocess backend: it follows every
user partition (its change feed, ``TUNE_CHANGE_FEED``) and reads the events committed there
since it last looked; a job whose events moved and that is waiting (``submitted``, ``queued``,
``retrying``: a submission, or a retry the ledger decided) is handed to the ``Dispatcher``, which
checks the job's own events before anything. A stop request needs nothing from here: the
job's runner reads its job's events (``stopping``) and a queued job is stopped by the request.
On start the runs an earlier dispatcher launched that still go are adopted (``Dispatcher.adopt_alive``:
after a SIGKILL the runners live on), then the jobs the views show waiting are submitted
(``runners.recovery``), after the heads were taken, so nothing committed in between is missed.

The backend is ``TUNE_LAUNCH_BACKEND``'s: ``local`` runs each runner as a child of this process (in a
session of its own); with a ``pubsub://`` ``--heartbeats`` (the multi-process topology) the runner
publishes its heartbeats there itself (ordering key: the job id), so it and its metering outlive a
killed dispatcher; any other URL gets the heartbeats relayed from the runner's stdout; ``ray``
submits each runner as a Ray job to ``TUNE_RAY_ADDRESS`` (``runners.backends.RayJobsBackend``),
and the runner publishes to ``--heartbeats`` itself, which must then be a ``pubsub://`` URL (a Ray
job's stdout reaches no one). Either way the ledger role (``roles.ledger``) reads them there; both
derive each attempt's secret from the platform's heartbeat key (``TUNE_HEARTBEAT_KEY``, or the
home's). A Ray runner's environment: ``TUNE_HOME`` (``TUNE_RAY_RUNNER_HOME``, else this home),
``RUNNER_ENV_PASSED``, its attempt's secrets.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from domain.job_states import WAITING_STATES
from runners.backends import LocalSubprocessBackend
from runners.dispatcher import Dispatcher, local_dispatcher
from runners.recovery import resubmit_waiting
from runtime.context import Runtime
from runtime.settings import Settings, heartbeat_key_of, ledger_of
from storage import layout
from storage.heartbeats import HeartbeatPublisher, open_heartbeat_transport

__all__ = [
    "RUNNER_ENV_PASSED",
    "SubmissionFollower",
    "local_role_dispatcher",
    "ray_dispatcher",
    "run_dispatcher",
]

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


RUNNER_ENV_PASSED = (
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "PYTHONPATH",
)
"""What a Ray runner gets of this process's environment (where set): the emulators, the hub's mode."""


def ray_dispatcher(
    settings: Settings, runtime: Runtime, *, heartbeats: str, runner_module: str, **options: object
) -> Dispatcher:
    """A Dispatcher on the Ray cluster at ``settings.ray_address``: its runners publish their
    heartbeats to ``heartbeats`` themselves (Pub/Sub only: ``check_heartbeat_url``)."""
    import os

    from runners.backends import RayJobsBackend
    from runners.backends.ray_jobs import check_heartbeat_url

    heartbeat_url = check_heartbeat_url(heartbeats)
    python = settings.ray_python or sys.executable
    env = {name: os.environ[name] for name in RUNNER_ENV_PASSED if os.environ.get(name)}
    env["TUNE_HOME"] = os.environ.get("TUNE_RAY_RUNNER_HOME") or str(settings.home)
    backend = RayJobsBackend(
        settings.ray_address,
        env=env,
        python=python,
        argv=lambda r: [python, "-m", runner_module, r.bucket_url, r.run_object],
        stop_wait_s=settings.ray_stop_wait_s,
        log_dir=Path(settings.home) / "runs",
    )
    return Dispatcher(
        runtime.bucket,
        backend,
        heartbeat_url=heartbeat_url,
        hardware_source="ray",
        **options,  # type: ignore[arg-type]
    )


def local_role_dispatcher(
    settings: Settings, runtime: Runtime, *, heartbeats: str, runner_module: str, **options: object
) -> tuple[Dispatcher, HeartbeatPublisher | None]:
    """A Dispatcher whose runners are children of this process; with the publisher it relays their
    stdout heartbeats to (None: a ``pubsub://`` ``heartbeats``, which the runners publish to themselves)."""
    from runners.backends import LaunchRequest

    def runner_argv(request: LaunchRequest) -> list[str]:
        return [sys.executable, "-m", runner_module, request.bucket_url, request.run_object]

    log_dir = Path(settings.home) / "runs"
    runner_env = {"TUNE_HOME": str(settings.home)}
    if heartbeats.startswith("pubsub://"):  # the runner publishes itself: it outlives this process
        backend = LocalSubprocessBackend(log_dir=log_dir, env=runner_env, argv=runner_argv)
        return Dispatcher(runtime.bucket, backend, heartbeat_url=heartbeats, **options), None  # type: ignore[arg-type]
    publisher = open_heartbeat_transport(heartbeats).publisher()
    dispatcher = local_dispatcher(
        runtime.bucket,
        heartbeats=publisher,
        log_dir=log_dir,
        runner_env=runner_env,
        argv=runner_argv,
        **options,
    )
    return dispatcher, publisher


def run_dispatcher(
    settings: Settings,
    *,
    heartbeats: str,
    max_concurrent: int = 1,
    runner_module: str = "runners.job_runner",
) -> None:
    """Dispatch submitted jobs until SIGTERM or SIGINT (then stop the runs gracefully)."""
    runtime = Runtime(settings)
    ledger_of(settings, runtime.bucket, role="dispatcher")
    options = {
        "open_app": runtime.user_app,
        "clock": runtime.clock,
        "max_concurrent": max_concurrent,
        "heartbeat_key": heartbeat_key_of(settings),
        "platform": runtime.platform,
    }
    publisher = None
    if settings.launch_backend == "ray":
        dispatcher = ray_dispatcher(
            settings, runtime, heartbeats=heartbeats, runner_module=runner_module, **options
        )
    else:
        dispatcher, publisher = local_role_dispatcher(
            settings, runtime, heartbeats=heartbeats, runner_module=runner_module, **options
        )
    follower = SubmissionFollower(runtime, dispatcher)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follower.mark_heads()
    adopted = (
        dispatcher.adopt_alive()
    )  # before any submit: a job whose runner still goes is not launched again
    requeued = resubmit_waiting(dispatcher, runtime.bucket)
    runtime.follow(runtime.change_feed(runtime.all_partitions), follower.changed)
    log.info(
        "dispatcher (%s backend): %d run(s) adopted, %d job(s) requeued, following %s",
        settings.launch_backend,
        adopted,
        requeued,
        settings.change_feed,
    )
    dispatcher.run(stop)
    runtime.stop()
    dispatcher.close()
    if publisher is not None:
        publisher.close()
