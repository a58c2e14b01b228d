"""The dispatcher: its own queue of jobs, handed at most ``max_concurrent`` at a time to a backend.

``submit(user_id, job_id)`` (the API calls it after a job is submitted; safe to call again
for a job already known) queues the job (``Queued`` event) and appends it to the queue. The
ledger calls it too after it retried a lost job: a run still going for an older attempt is
then asked to end, and the new attempt starts once that run is reaped.
After a restart, ``adopt_alive()`` takes on the runs the previous dispatcher launched that still go
(by run id: the Ray submission id, or the local backend's run records), so they are not launched
again. ``poll()`` reaps ended runs and starts queued ones; ``run(stop_event)`` polls until told to
stop (``tune serve``); ``close()`` stops the runs still going, gracefully.

Which queued jobs start (``runners.launch_gate``, rules in ``domain.scheduling``): free slots go
across users in the fair order (the least-served user first, ties to the oldest waiting job:
``fair_order``), never past a user's concurrent-job quota (their job waits); a job whose user's
monthly budget is spent is not started but stopped (reason ``budget_exceeded``, as the ledger's
hard limit), e.g. one submitted with force, or one whose budget the user's other jobs spent
while it waited. A job whose hardware is all taken (``NoCapacity``) waits at the queue's head.

Before each attempt the dispatcher makes the attempt's fencing lease (random), asks the
backend where it would run (``place``: its placement), writes both in ``jobs/<id>/run.yaml``
(``runners.attempt_spec``, resuming from the job's last checkpoint) and launches
``python -m runners.job_runner`` on it; the runner records them in ``Started``. A job whose
hardware the backend does not have fails to start (``NotPlaceable``), as any launch failure.
When it starts running (``run``), the dispatcher records what its backend offers
(``PlatformApp.offer_hardware``, only when it changed), so the API refuses jobs for hardware
none of the platform's backends has. The outcome is read from the job's events, never from an exit status:

- ``retrying`` (the runner announced the next attempt): launched again at the head of the
  queue; the attempt counter is the job's own;
- still ``running`` (the runner died without an outcome): ``Lost``, then retried from the
  last checkpoint while ``max_retries`` allows, else ``Failed``; still ``stopping``: ``Stopped``;
- the attempt never started (runner broken): retried up to ``max_start_failures``, then ``Failed``;
- still ``pausing``: ``Lost``, then ``Paused`` (a resume continues from the last checkpoint);
- ``queued`` again (paused, then resumed before its run was reaped): queued for its next attempt;
- anything else (succeeded, stopped, failed, paused): done.

A paused job is not queued: ``submit`` it again after ``UserApp.resume_job`` queued it (the API
does), and its next attempt (``domain.job.next_attempt``) is launched like any queued job, within
``max_concurrent``, resuming from the checkpoint its pause saved.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from domain.job import next_attempt
from domain.job_states import TERMINAL_STATES, JobState
from domain.read_models import JobView
from domain.scheduling import BUDGET_SPENT, fair_order
from domain.training_config import parse_training_config
from runners.attempt_spec import JobRunSpec, build_attempt_spec, write_job_run
from runners.backends import (
    AliveRun,
    LaunchBackend,
    LaunchFailed,
    LaunchRequest,
    LocalSubprocessBackend,
    NoCapacity,
)
from runners.base_models import BaseModelSource
from runners.heartbeat_relay import STDOUT_URL
from runners.job_recorder import JobRecorder
from runners.launch_gate import LaunchGate
from storage import Bucket, layout
from storage.clock import Clock, utc_now
from storage.eventstore.apps import PartitionApps
from storage.eventstore.ledger import ledger_for
from storage.heartbeats import Heartbeat, HeartbeatPublisher, attempt_secret

if TYPE_CHECKING:
    from pathlib import Path

    from domain.applications import PlatformApp, UserApp

__all__ = ["Dispatcher", "JobRef", "local_dispatcher"]

log = logging.getLogger(__name__)

RUNNER_ROLE = "runner"
"""The role job runners sign their commits as (``LaunchRequest.signing_env``)."""

OpenUserApp = Callable[[str], "UserApp"]
Notify = Callable[[str], None]
SourceOf = Callable[[str], BaseModelSource | None]


class JobRef(NamedTuple):
    user_id: str
    job_id: str

    @property
    def partition(self) -> str:
        return layout.user_partition(self.user_id)


class _Launched(NamedTuple):
    run_id: str
    attempt: int


class Dispatcher:
    """Queues jobs and launches one job runner per attempt (see the module docstring).

    Args:
        bucket: where run.yaml files are written (and the event store lives).
        backend: runs the job runners.
        bucket_url: the URL runners open the bucket by (default ``bucket.url``).
        open_app: the ``UserApp`` of a user id (default: on ``bucket``'s event store, cached).
        clock: the time of the events the dispatcher records.
        max_concurrent: runs at once.
        heartbeat_url: written into every run.yaml (``stdout:`` for local relayed runners).
        notify: called with a partition (``users/<uid>``) after the dispatcher or a run changed it.
        base_model_source: where an operator-added base model comes from (None: the catalogue).
        on_launch: called with each attempt's run spec once it is launched (e.g. so the ledger
            expects its heartbeats).
        poll_interval_s: the pause between polls in ``run``.
        heartbeat_key: the platform's heartbeat key (``runtime.settings.heartbeat_key_of``): each
            attempt's runner gets its secret (``storage.heartbeats.attempt_secret``) through the
            backend; None: runners sign nothing and the ledger drops their heartbeats.
        max_start_failures: runners that end before starting their attempt before the job fails.
        platform: where the backend's offers are recorded (``offer_hardware``; None: nowhere).
        hardware_source: the name its offers are recorded under (one per backend of the platform).
    """

    def __init__(
        self,
        bucket: Bucket,
        backend: LaunchBackend,
        *,
        bucket_url: str | None = None,
        open_app: OpenUserApp | None = None,
        clock: Clock = utc_now,
        max_concurrent: int = 1,
        heartbeat_url: str = STDOUT_URL,
        notify: Notify | None = None,
        base_model_source: SourceOf | None = None,
        on_launch: Callable[[JobRunSpec], None] | None = None,
        poll_interval_s: float = 0.5,
        max_start_failures: int = 2,
        heartbeat_key: bytes | None = None,
        platform: PlatformApp | None = None,
        hardware_source: str = "local",
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.bucket = bucket
        self.backend = backend
        self.bucket_url = bucket_url or bucket.url
        self.open_app = open_app or PartitionApps(bucket).user
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.heartbeat_url = heartbeat_url
        self.notify = notify or (lambda partition: None)
        self.base_model_source = base_model_source or (lambda name: None)
        self.on_launch = on_launch or (lambda spec: None)
        self.poll_interval_s = poll_interval_s
        self.max_start_failures = max_start_failures
        self.heartbeat_key = heartbeat_key
        self.platform = platform
        self.hardware_source = hardware_source
        self._queue: collections.deque[JobRef] = collections.deque()
        self._active: dict[JobRef, _Launched] = {}
        self._ended: list[tuple[JobRef, _Launched, int | None]] = []
        self._starting: set[JobRef] = set()  # picked off the queue, launch not recorded yet
        self._start_failures: collections.Counter[JobRef] = collections.Counter()
        self._lock = threading.Lock()  # the queue and the active runs
        self._poll_lock = threading.Lock()  # one poll at a time
        self._closing = False
        self._signing_env: dict[str, str] | None = None
        self.gate = LaunchGate(self.open_app, platform, clock)
        self._served: dict[str, int] = {}  # user -> the turn they were last picked at (fair_order)
        self._turn = 0

    # ---- the queue ----

    def submit(self, user_id: str, job_id: str) -> None:
        """Queue a job (``submitted`` -> ``queued``); a job already known or finished is ignored."""
        ref = JobRef(user_id, job_id)
        with self._lock:
            launched = self._active.get(ref)
        if launched is not None:
            self._end_if_superseded(ref, launched)
            return
        if self._known(ref):
            return
        recorder = self._recorder(ref)
        job = recorder.view()
        if job.state == JobState.SUBMITTED:
            job = recorder.queued()
            self.notify(ref.partition)
        if job.state not in TERMINAL_STATES:
            self._enqueue(ref)

    def adopt_alive(self) -> int:
        """After a restart: take on the runs an earlier dispatcher launched that still go
        (``LaunchBackend.alive_runs``, by run id), before anything is submitted, so their jobs are not
        launched again and their hardware counts as taken; a run whose job moved on since (a later
        attempt, or an outcome) is asked to end. Returns how many runs were adopted."""
        latest: dict[JobRef, AliveRun] = {}
        for run in self.backend.alive_runs():
            ref = JobRef(run.user_id, run.job_id)
            self.backend.adopt(run)
            older = latest.get(ref)
            if older is not None and older.attempt > run.attempt:
                older, run = run, older
            if older is not None:  # two runs of one job: the older attempt's ends
                self.backend.stop(older.run_id)
            latest[ref] = run
        for ref, run in latest.items():
            with self._lock:
                self._active[ref] = _Launched(run.run_id, run.attempt)
            log.info("adopted run %s of %s (attempt %d)", run.run_id, ref.job_id, run.attempt)
            self._guard(ref, self._end_if_superseded, ref, self._active[ref], requeue=False)
        return len(latest)

    def queued(self) -> list[JobRef]:
        """Jobs waiting, next first."""
        with self._lock:
            return list(self._queue)

    def running(self) -> dict[JobRef, str]:
        """Jobs with a run going, and the run's id."""
        return {ref: launched.run_id for ref, launched in self._running_runs()}

    # ---- the loop ----

    def poll(self) -> None:
        """Reap the runs that ended, then start queued jobs while there is room."""
        with self._poll_lock:
            for ref, launched in self._running_runs():
                status = self.backend.status(launched.run_id)
                if not status.running:
                    with self._lock:
                        del self._active[ref]
                        self._ended.append((ref, launched, status.exit_code))
                    self.backend.forget(launched.run_id)
            for ended in list(self._ended):
                if self._guard(ended[0], self._after_run, *ended, requeue=False):
                    self._ended.remove(ended)
            for ref in self._pick():  # each job at most once per poll, even if it goes back
                try:
                    self._guard(ref, self._start, ref)
                finally:
                    with self._lock:
                        self._starting.discard(ref)

    def _running_runs(self) -> list[tuple[JobRef, _Launched]]:
        with self._lock:
            return list(self._active.items())

    def _pick(self) -> list[JobRef]:
        """Take the jobs to start now out of the queue: as many as there are free slots, across
        users in the fair order (``domain.scheduling.fair_order``), each user under their quota."""
        with self._lock:
            if self._closing or len(self._active) >= self.max_concurrent or not self._queue:
                return []
            waiting = list(self._queue)
            running = collections.Counter(ref.user_id for ref in self._active)
            slots = self.max_concurrent - len(self._active)
        picked = fair_order(
            waiting,
            lambda ref: ref.user_id,
            running=running,
            quota=self._quota,
            slots=slots,
            served=self._served,
        )
        with self._lock:
            for ref in picked:
                self._queue.remove(ref)
                self._starting.add(ref)  # a submit meanwhile (its Queued commit heard) must not requeue it
                self._turn += 1
                self._served[ref.user_id] = self._turn
        return picked

    def _quota(self, user_id: str) -> int | None:
        try:
            return self.gate.quota(user_id)
        except Exception:  # the platform briefly unreadable: the job waits for the next poll
            log.exception("reading the quota of %s failed", user_id)
            return 0

    def offer_hardware(self) -> dict[str, int]:
        """Record what the backend offers (if it changed since last recorded); returns the offers."""
        offers = self.backend.offers()
        if self.platform is not None and self.platform.offer_hardware(
            self.hardware_source, offers, self.clock()
        ):
            self.notify(layout.PLATFORM)
            log.info("hardware offered by %s: %s", self.hardware_source, offers)
        return offers

    def run(self, stop: threading.Event) -> None:
        """Record the backend's offers, then poll every ``poll_interval_s`` until ``stop`` is set
        (runs keep going; see ``close``)."""
        try:
            self.offer_hardware()
        except Exception:  # jobs still run; the API goes on with the offers recorded before
            log.exception("recording the hardware on offer failed")
        while True:
            try:
                self.poll()
            except Exception:  # the loop outlives one bad poll (e.g. the bucket briefly unreachable)
                log.exception("dispatcher poll failed")
            if stop.wait(self.poll_interval_s):
                return

    def close(self, timeout: float = 60.0) -> None:
        """Stop every run gracefully, wait up to ``timeout``, record the outcomes; start nothing new.

        An interrupted attempt is left ``retrying`` (resumable from its checkpoint); ``submit``
        it again to a new dispatcher to go on.
        """
        self._closing = True
        self.backend.close(timeout)
        self.poll()

    # ---- starting and ending a run ----

    def _start(self, ref: JobRef) -> None:
        job = self._recorder(ref).view()
        if job.state == JobState.QUEUED:
            attempt = next_attempt(job.attempt, job.attempts)  # 1, or the next one after a pause
        elif job.state == JobState.RETRYING:
            attempt = job.attempt
        else:
            log.info("not starting %s: it is %s", ref.job_id, job.state)
            return
        refusal = self.gate.budget_refusal(ref.user_id)
        if refusal is not None:
            log.warning("not starting %s: %s", ref.job_id, refusal)
            self._recorder(ref).app.request_stop(ref.job_id, BUDGET_SPENT, self.clock())
            self.notify(ref.partition)
            return
        try:
            placement = self.backend.place(job.gpu_type, job.gpu_count)
        except NoCapacity as exc:  # it waits at the queue's head until a run of that hardware ends
            log.info("%s waits: %s", ref.job_id, exc)
            self._enqueue(ref, first=True)
            return
        except LaunchFailed as exc:
            log.warning("%s: %s", ref.job_id, exc)
            self._start_failed(ref, job, attempt, str(exc))
            return
        spec = build_attempt_spec(
            job,
            attempt=attempt,
            heartbeat_url=self.heartbeat_url,
            base_model_source=self.base_model_source(job.base_model),
            lease=secrets.token_hex(8),
            placement=placement,
        )
        request = LaunchRequest(
            run_id=f"{ref.job_id}-{attempt}-{secrets.token_hex(3)}",
            user_id=ref.user_id,
            job_id=ref.job_id,
            attempt=attempt,
            bucket_url=self.bucket_url,
            run_object=write_job_run(self.bucket, spec),
            gpu_type=job.gpu_type,
            gpu_count=job.gpu_count,
            heartbeat_secret=None
            if self.heartbeat_key is None
            else attempt_secret(self.heartbeat_key, ref.user_id, ref.job_id, attempt),
            placement=placement,
            signing_env=self._runner_signing_env(),
        )
        try:
            self.backend.launch(request)
        except NoCapacity as exc:
            log.info("%s waits: %s", ref.job_id, exc)
            self._enqueue(ref, first=True)
            return
        except LaunchFailed as exc:
            log.warning("%s", exc)
            self._start_failed(ref, job, attempt, str(exc))
            return
        with self._lock:
            self._active[ref] = _Launched(request.run_id, attempt)
        log.info(
            "started %s attempt %d on %d x %s", ref.job_id, attempt, placement.gpu_count, placement.gpu_type
        )
        self.on_launch(spec)

    def _after_run(self, ref: JobRef, launched: _Launched, exit_code: int | None) -> None:
        recorder = self._recorder(ref)
        job = recorder.view()
        log.info("run %s ended (status %s): job is %s", launched.run_id, exit_code, job.state)
        if job.state == JobState.PAUSED:
            log.info("%s is paused: its run %s ended (or never started)", ref.job_id, launched.run_id)
        elif job.attempt < launched.attempt or (
            job.state == JobState.RETRYING and job.attempt == launched.attempt
        ):
            self._start_failed(ref, job, launched.attempt, f"the job runner exited with status {exit_code}")
        elif job.state == JobState.RETRYING:
            self._enqueue(ref, first=True)
        elif job.state == JobState.STOPPING and job.attempt == launched.attempt:
            step = job.last_checkpoint.step if job.last_checkpoint is not None else job.step
            recorder.stopped(step=step)
        elif job.state == JobState.PAUSING and job.attempt == launched.attempt:
            recorder.lost(job.last_heartbeat_at)  # died before recording its pause: paused all the same
            recorder.paused()
        elif job.state == JobState.QUEUED:  # resumed before its paused run was reaped
            self._enqueue(ref)
        elif job.state == JobState.RUNNING and job.attempt == launched.attempt:
            recorder.lost(job.last_heartbeat_at)
            reason = f"the job runner exited with status {exit_code} without recording an outcome"
            if recorder.retry_or_fail(reason, _max_retries(job)).state == JobState.RETRYING:
                self._enqueue(ref, first=True)
        self.notify(ref.partition)

    def _runner_signing_env(self) -> dict[str, str]:
        """The runner role's key and the root public key (``Ledger.role_env``), made once: every
        runner signs its commits with a key this platform's root vouches for, whatever its home."""
        if self._signing_env is None:
            self._signing_env = ledger_for(self.bucket).role_env(RUNNER_ROLE)
        return self._signing_env

    def _end_if_superseded(self, ref: JobRef, launched: _Launched) -> None:
        """A job whose attempt moved on (e.g. the ledger found it lost and retried it) while its
        runner still goes on: ask that runner to end; the next attempt starts once it is reaped."""
        job = self._recorder(ref).view()
        if job.attempt > launched.attempt or job.state in TERMINAL_STATES:
            log.info(
                "%s moved on to %s attempt %d: ending run %s",
                ref.job_id,
                job.state,
                job.attempt,
                launched.run_id,
            )
            self.backend.stop(launched.run_id)

    def _start_failed(self, ref: JobRef, job: JobView, attempt: int, reason: str) -> None:
        self._start_failures[ref] += 1
        if self._start_failures[ref] < self.max_start_failures:
            self._enqueue(ref, first=True)
            return
        del self._start_failures[ref]
        self._recorder(ref).failed(f"attempt {attempt} could not start: {reason}")
        self.notify(ref.partition)

    def _guard(self, ref: JobRef, action: Callable[..., None], *args: object, requeue: bool = True) -> bool:
        """Run ``action``; if it breaks, log it (and with ``requeue`` put the job back at the queue's end)."""
        try:
            action(*args)
        except Exception:
            log.exception("dispatching %s failed; trying again at a later poll", ref.job_id)
            if requeue:
                self._enqueue(ref)
            return False
        return True

    def _enqueue(self, ref: JobRef, *, first: bool = False) -> None:
        with self._lock:
            if ref in self._active or ref in self._queue:
                return
            if first:
                self._queue.appendleft(ref)
            else:
                self._queue.append(ref)

    def _known(self, ref: JobRef) -> bool:
        with self._lock:
            return (
                ref in self._active
                or ref in self._queue
                or ref in self._starting
                or any(e[0] == ref for e in self._ended)
            )

    def _recorder(self, ref: JobRef) -> JobRecorder:
        return JobRecorder(self.open_app(ref.user_id), ref.job_id, clock=self.clock)


def _max_retries(job: JobView) -> int:
    return parse_training_config(job.config).max_retries


def local_dispatcher(
    bucket: Bucket,
    *,
    heartbeats: HeartbeatPublisher | None = None,
    notify: Notify | None = None,
    log_dir: Path | None = None,
    runner_env: Mapping[str, str] | None = None,
    argv: Callable[[LaunchRequest], list[str]] | None = None,
    **options: object,
) -> Dispatcher:
    """A Dispatcher with the local subprocess backend, relaying runner heartbeats to ``heartbeats``.

        Every relayed heartbeat also calls ``notify`` with the job's partition (the runner appends
        events there around each heartbeat). ``runner_env`` is added to each runner's environment
        (the home it keeps its work and base models in); ``argv``, the runner's command (default
    ``LaunchRequest.argv``). ``options`` are the Dispatcher's keyword arguments.
    """

    def on_heartbeat(heartbeat: Heartbeat) -> None:
        if heartbeats is not None:
            heartbeats.publish(heartbeat)
        if notify is not None:
            notify(layout.user_partition(heartbeat.user_id))

    backend = LocalSubprocessBackend(on_heartbeat=on_heartbeat, log_dir=log_dir, env=runner_env, argv=argv)
    return Dispatcher(bucket, backend, notify=notify, **options)  # type: ignore[arg-type]
