"""The job runner: one attempt of one job, from its run.yaml to a recorded outcome.

``python -m runners.job_runner <bucket-url> <users/<uid>/jobs/<jid>/run.yaml>``

1. records ``Started(attempt, lease, placement)`` from its run.yaml (a job that was stopped
   meanwhile, or whose attempt another runner started first, is left alone: nothing is
   touched); every report after it carries the lease (``runners.job_recorder``);
2. copies the base model, the processed dataset (and validation dataset, when the config names
   one) and the checkpoint to resume from into a working folder (``runners.workdir``) and
   writes the trainer's run.yaml;
3. starts ``python -m runners.trainer`` and reads its JSON-line events: steps go to
   ``jobs/<id>/attempts/<n>/metrics.jsonl``, each checkpoint is uploaded to
   ``jobs/<id>/attempts/<n>/checkpoints/<step>/`` and recorded, the trainer's stderr and a line
   per event go to ``jobs/<id>/attempts/<n>/job.log`` (uploaded whole at every heartbeat and at
   the end). An attempt writes under its own ``attempts/<n>/`` only, so an orphaned runner and the
   attempt that replaced it never write one object;
4. sends a heartbeat every ``heartbeat_interval_s`` from the start of the attempt and a final
   one once its outcome is recorded (``runners.heartbeat_emitter``), with GPU time counted
   while the trainer process runs; after each it reports progress and reads the job: a
   ``stopping`` or ``pausing`` job has its trainer stopped (stop file + SIGTERM: it checkpoints and
   exits);
   a job that moved on to another attempt or out of ``running`` (superseded: e.g. found lost
   and retried) has its trainer killed at once and nothing more is recorded;
   and if the control plane is gone (below) the trainer is stopped the graceful way and the
   attempt ends ``retrying`` for the platform's fault (``CONTROL_PLANE_GONE``);
5. records the outcome: ``Succeeded`` with the model registered (weights uploaded to
   ``models/<id>/weights/``; a run early stopping ended has ``early_stopped_at_step`` in its
   metrics), ``Stopped`` (with the job's last checkpoint, less its optimizer and
   trainer state, published and registered as the model the same way: a stopped job's model id
   answers; no checkpoint, no model), ``Paused`` (a ``pausing`` job, once the trainer saved its
   checkpoint: no model is published, nothing is charged past the attempt's last heartbeat, and a
   resume continues from that checkpoint; a trainer that fails or is interrupted while pausing
   ends paused too), ``Failed`` (bad input), or ``Retrying`` (the next
   attempt resumes from the last checkpoint; the dispatcher launches it) or ``Failed`` when
   no retries are left.

SIGTERM or SIGINT to the runner stops the trainer the same graceful way; the attempt is then
``interrupted``: retried from its checkpoint if retries are left, else stopped.

The control plane is gone when the heartbeat transport says so: its reply is an error where
it has one (``BrokenPipeError`` on the stdout pipe of a ``tune serve`` that was killed: at
once; a publish that fails, e.g. Pub/Sub, ``GONE_AFTER_FAILED_INTERVALS`` intervals in a
row), else when metering stalls: once the ledger has metered this attempt, its metered seq
(``Job.metered_seq``, read each interval) has not moved for ``STALL_INTERVALS`` intervals
(at least ``MIN_STALL_S``) while heartbeats were sent. That is longer than the ledger's own
lost threshold (3 intervals), so a restarted ledger that meters again in time adopts the
attempt rather than racing it. Heartbeats that could not be delivered, the final one
included, are kept and written as the attempt ends to ``unsent-heartbeats/<jid>/<n>.jsonl``
(``runners.heartbeat_spool``), where the ledger meters them. Whatever the path, the runner
ends with its final heartbeat, its log and metrics uploaded, that spool and its working
folder removed.

Exit status: 0 an outcome was recorded (or there was nothing to do), 1 the runner itself
broke, 2 the run.yaml could not be read. The job's state, not the status, is the outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from domain.errors import Conflict, PlatformError, ValidationFailed
from domain.job import retries_used
from domain.job_states import JobState
from domain.metering import may_retry
from domain.model import ModelWeights
from domain.read_models import JobView
from runners.attempt_spec import JobRunSpec
from runners.heartbeat_emitter import AttemptIdentity, HeartbeatEmitter, Progress
from runners.heartbeat_spool import SpoolingPublisher
from runners.job_recorder import JobRecorder
from runners.log_mirror import MirroredFile
from runners.trainer.events import Checkpoint, Done, Error, Eval, Started, Step, TrainerEvent, decode_event
from runners.trainer.run_spec import RunSpec, write_run_spec
from runners.workdir import (
    WorkDir,
    download_object,
    download_prefix,
    fetch_base_model,
    model_from_checkpoint,
    prune_job_checkpoints,
    publish_model,
    upload_folder,
)
from storage import Bucket, ObjectNotFound, layout
from storage.clock import Clock, utc_now
from storage.heartbeats import Heartbeat, HeartbeatPublisher

if TYPE_CHECKING:
    from domain.applications import UserApp

__all__ = [
    "CONTROL_PLANE_GONE",
    "EXIT_BAD_SPEC",
    "EXIT_CRASHED",
    "EXIT_OK",
    "GONE_AFTER_FAILED_INTERVALS",
    "MIN_STALL_S",
    "STALL_INTERVALS",
    "JobRunner",
    "Outcome",
    "main",
]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CRASHED, EXIT_BAD_SPEC = 0, 1, 2
_TRAINER_INVALID, _TRAINER_STOPPED = 2, 3  # runners.trainer's exit statuses
TRAINER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "runners.trainer")
STOP_GATE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "runners.trainer.stop_gate")
STOP_GATE_TIMEOUT_S = 600.0

CONTROL_PLANE_GONE = "control plane unreachable"
"""The start of the retry reason of an attempt that ended because its control plane was gone: a
platform fault, never the user's (see ``JobRunner._retry``)."""
GONE_AFTER_FAILED_INTERVALS = 3
"""Heartbeat intervals in a row whose heartbeats could not be published before the control plane
is taken for gone (a broken pipe: at once)."""
STALL_INTERVALS = 6
"""Heartbeat intervals without metering (once there was some) before the control plane is taken for
gone: twice the ledger's lost threshold, so a restarted ledger adopts the attempt first."""
MIN_STALL_S = 150.0
"""...and never less than this many seconds: short intervals would make a busy ledger look dead, and
a restarted ledger on Pub/Sub meters a job again only once a dead ledger's leases on its ordering
key expire (the ack deadline, 60 s: ``held_back_s``) plus its lost threshold; this leaves room for
both, so such an attempt is adopted rather than given up and retried."""


class Outcome(StrEnum):
    """What an attempt ended with (the job's state says the same)."""

    SUCCEEDED = "succeeded"
    STOPPED = "stopped"
    PAUSED = "paused"
    FAILED = "failed"
    RETRYING = "retrying"
    SKIPPED = "skipped"
    """The attempt could not start (the job was stopped or moved on meanwhile)."""
    ABANDONED = "abandoned"
    """The job moved on while this attempt ran (e.g. presumed lost); nothing was recorded."""


class _TrainerState:
    """What the trainer has said so far (written by the reader, read by the heartbeat thread)."""

    def __init__(self) -> None:
        self.progress = Progress()
        self.total_steps: int | None = None
        self.epoch: float | None = None
        self.reported_step = -1
        self.checkpoints: dict[int, str] = {}
        self.done: Done | None = None
        self.error: Error | None = None

    def snapshot(self) -> Progress:
        return self.progress


class JobRunner:
    """Runs one attempt (see the module docstring).

    Args:
        bucket: where the job's objects live.
        spec: the attempt's run.yaml.
        app: the job owner's ``UserApp`` (on the same bucket's event store).
        publisher: where heartbeats go.
        work_root: working folders are made under it (``<job_id>-<attempt>/``, removed at the end).
        cache_dir: the local base-model store (``resolve_base_model``).
        clock: the time of events and heartbeats.
        trainer_command: the trainer's argv before ``--run <run.yaml>``.
        stop_grace_s: how long a stopping trainer may take before it is killed.
        keep_checkpoints: how many of the latest checkpoints stay in the bucket (None: all).
        keep_workdir: leave the working folder behind (debugging).
        heartbeat_secret: the attempt's secret its heartbeats are signed with (None: unsigned).
        metering_stall_s: how long metering may stall before the control plane is taken for gone
            (default: ``STALL_INTERVALS`` intervals, at least ``MIN_STALL_S``).
        stop_gate_command: the stop gate's argv (``runners.trainer.stop_gate``) run on a model before
            it is published; None: models are published unchecked.
    """

    def __init__(
        self,
        bucket: Bucket,
        spec: JobRunSpec,
        *,
        app: UserApp,
        publisher: HeartbeatPublisher,
        work_root: Path,
        cache_dir: Path,
        clock: Clock = utc_now,
        trainer_command: Sequence[str] = TRAINER_COMMAND,
        stop_grace_s: float = 600.0,
        keep_checkpoints: int | None = 2,
        keep_workdir: bool = False,
        heartbeat_secret: str | None = None,
        metering_stall_s: float | None = None,
        stop_gate_command: Sequence[str] | None = STOP_GATE_COMMAND,
    ) -> None:
        self.bucket = bucket
        self.spec = spec
        self.publisher = publisher
        self.work = WorkDir(Path(work_root) / f"{spec.job_id}-{spec.attempt}")
        self.cache_dir = Path(cache_dir)
        self.clock = clock
        self.trainer_command = list(trainer_command)
        self.stop_grace_s = stop_grace_s
        self.keep_checkpoints = keep_checkpoints
        self.keep_workdir = keep_workdir
        self.stop_gate_command = None if stop_gate_command is None else list(stop_gate_command)
        placed = spec.placed  # what the heartbeats say: the ledger bills the recorded placement
        self.recorder = JobRecorder(
            app, spec.job_id, spec.attempt, clock=clock, lease=spec.lease, placement=spec.placement
        )
        self.trainer = _TrainerState()
        self.log: MirroredFile | None = None
        self.metrics: MirroredFile | None = None
        identity = AttemptIdentity(
            spec.user_id, spec.job_id, spec.attempt, placed.gpu_type, placed.gpu_count, spec.lease
        )
        self.spool = SpoolingPublisher(publisher)
        self.metering = _MeteringWatch(
            spec.attempt,
            metering_stall_s
            if metering_stall_s is not None
            else max(STALL_INTERVALS * spec.heartbeat_interval_s, MIN_STALL_S),
        )
        self.emitter = HeartbeatEmitter(
            self.spool,
            identity,
            interval_s=spec.heartbeat_interval_s,
            progress=self.trainer.snapshot,
            on_beat=self._after_heartbeat,
            clock=clock,
            secret=heartbeat_secret,
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._trainer_exited = False
        self._lock = threading.Lock()
        self._stop_why: str | None = None  # "requested", "pausing", "interrupted", "abandoned" or "orphaned"
        self._stop_since: float | None = None
        self._orphaned: str | None = None  # why the control plane is taken for gone

    # ---- the attempt ----

    def run(self) -> Outcome:
        """Run the attempt to its end and record the outcome."""
        try:
            self.recorder.started()
        except PlatformError as exc:
            log.warning("job %s attempt %d not started: %s", self.spec.job_id, self.spec.attempt, exc)
            return Outcome.SKIPPED
        self.log = MirroredFile(self.bucket, self.spec.log_object, self.work.log)
        self.metrics = MirroredFile(self.bucket, self.spec.metrics_object, self.work.metrics)
        spec = self.spec
        placed = spec.placed
        self._say(
            f"attempt {spec.attempt} started: {spec.base_model} on {placed.gpu_count} x {placed.gpu_type}"
        )
        self.emitter.start()
        try:
            return self._run()
        finally:
            self._end()

    def _end(self) -> None:
        """Whatever the outcome: the final heartbeat, the logs, the spool of unsent heartbeats, the
        working folder; each step runs even if one before it broke."""
        steps = (
            self._kill_trainer,
            self.emitter.close,
            self._write_spool,
            self._sync_logs,
            lambda: None if self.keep_workdir else self.work.remove(),
        )
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("%s: ending the attempt: a step failed", self.spec.job_id)

    def _write_spool(self) -> None:
        name = self.spec.unsent_heartbeats_object
        count = self.spool.write(self.bucket, name)
        if count:
            self._say(f"{count} heartbeat(s) could not be delivered: written to {name} for the ledger")

    def interrupt(self) -> None:
        """Stop the trainer gracefully because the runner itself must end (SIGTERM/SIGINT)."""
        self._stop_trainer("interrupted")

    def _run(self) -> Outcome:
        try:
            trainer_spec = self._prepare()
        except PlatformError as exc:
            return self._failed(f"cannot start training: {exc}")
        except Exception as exc:
            log.exception("preparing %s failed", self.work.root)
            return self._retry(f"preparing the working folder failed: {type(exc).__name__}: {exc}")
        if self._stop_why is not None:
            return self._finish(None)
        return self._finish(self._train(trainer_spec))

    def _prepare(self) -> RunSpec:
        spec, work = self.spec, self.work
        fetch_base_model(
            self.bucket,
            spec.base_model,
            work.base,
            cache_dir=self.cache_dir,
            source=spec.base_model_source,
            converting=self._converting,
        )
        try:
            download_object(self.bucket, spec.dataset_object, work.dataset)
        except ObjectNotFound:
            raise ValidationFailed(
                f"dataset {spec.dataset_id} has no processed data", where="dataset_id"
            ) from None
        validation = spec.config.validation_dataset_id
        if validation is not None:
            try:
                download_object(
                    self.bucket, layout.dataset_processed(spec.user_id, validation), work.validation
                )
            except ObjectNotFound:
                raise ValidationFailed(
                    f"validation dataset {validation} has no processed data", where="validation_dataset_id"
                ) from None
        resume = None
        if spec.resume_from is not None:
            step = int(spec.resume_from.rstrip("/").rsplit("/", 1)[-1])
            resume = work.resume(step)
            if download_prefix(self.bucket, spec.resume_from, resume) == 0:
                raise ObjectNotFound(f"checkpoint {spec.resume_from} is empty")
            self._say(f"resuming from the checkpoint at step {step}")
        start = None
        if spec.start_from is not None:
            start = self._fetch_start_point(spec.start_from)
        trainer_spec = RunSpec(
            job_id=spec.job_id,
            user_id=spec.user_id,
            attempt=spec.attempt,
            base_model_dir=str(work.base),
            dataset_path=str(work.dataset),
            validation_path=None if validation is None else str(work.validation),
            output_dir=str(work.out),
            config=spec.config,
            resume_from=None if resume is None else str(resume),
            stop_file=str(work.stop_file),
            base_model_ref=spec.base_model,
            init_from=None if start is None else str(start),
        )
        write_run_spec(work.trainer_run, trainer_spec)
        return trainer_spec

    def _fetch_start_point(self, prefix: str) -> Path:
        """The weights the job starts from, copied in without their trainer state; ValidationFailed
        (the user's: no retry) when they are gone (a pruned checkpoint, a deleted model)."""
        try:
            folder = model_from_checkpoint(
                self.bucket, prefix, self.work.start, base_model_ref=self.spec.base_model
            )
        except ObjectNotFound:
            raise ValidationFailed(
                f"the weights to start from are no longer in the bucket ({prefix}): the checkpoint was"
                " pruned or the model deleted",
                where="start_from",
            ) from None
        self._say(f"starting from the weights at {prefix}")
        return folder

    @contextlib.contextmanager
    def _converting(self, name: str) -> Iterator[None]:
        """The first use of a base model: say so in the log and the status while it is converted."""
        self._busy(f"converting base model {name} (first use), this takes a minute")
        began = time.monotonic()
        yield  # a failure is told by the outcome (failed or retrying), which also ends the activity
        self._say(f"base model {name} converted and stored in {time.monotonic() - began:.1f} s")
        self._busy(None)

    def _busy(self, activity: str | None) -> None:
        """Tell ``activity`` (None: done) in job.log at once and in the job's status."""
        if activity is not None:
            self._say(activity)
            self._sync_logs()
        try:
            self.recorder.activity(activity)
        except Conflict as exc:  # stopped or moved on meanwhile: the next heartbeat acts on it
            log.info("%s: activity not recorded: %s", self.spec.job_id, exc)

    def _train(self, trainer_spec: RunSpec) -> int:
        """Run the trainer to its exit, holding the GPU meanwhile; return its exit status."""
        with open(self.work.log, "ab") as stderr:
            proc = subprocess.Popen(
                [*self.trainer_command, "--run", str(self.work.trainer_run)],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.emitter.hold_gpu()
        with self._lock:
            self._proc = proc
            stop_now = self._stop_why is not None
        if stop_now:
            self._signal_trainer()
        (self.work.root / "trainer.pid").write_text(f"{proc.pid}\n")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._on_trainer_line(line)
            status = proc.wait()
        finally:
            self._kill_trainer()
            self.emitter.release_gpu()
            self._trainer_exited = True
        self._say(f"trainer exited with status {status} after {self.emitter.gpu_ms / 1000:.1f} s of GPU time")
        self._report_progress()  # the last steps since the last heartbeat
        return status

    # ---- the trainer's events ----

    def _on_trainer_line(self, line: bytes) -> None:
        event = decode_event(line)
        if event is None:
            if line.strip():
                self._append_log(line)
            return
        try:
            self._on_event(event)
        except Exception:  # one event we could not handle (e.g. a failed upload) must not end the run
            log.exception("handling %s failed", type(event).__name__)
            self._say(f"could not handle the trainer's {type(event).__name__.lower()} event")

    def _on_event(self, event: TrainerEvent) -> None:
        state = self.trainer
        if isinstance(event, Step):
            state.progress = Progress(event.step, event.loss, event.tokens)
            state.total_steps, state.epoch = event.total_steps, event.epoch
            self._metric(event)
            self._say(f"step {event.step}/{event.total_steps} epoch {event.epoch:.3f} loss {event.loss:.4f}")
        elif isinstance(event, Eval):
            self._metric(event)
            self._say(f"step {event.step} eval_loss {event.eval_loss:.4f}")
        elif isinstance(event, Checkpoint):
            if self._stop_why != "abandoned":  # a superseded attempt records nothing more
                self._save_checkpoint(event.step, Path(event.path))
        elif isinstance(event, Started):
            if event.start_step > state.progress.step:  # resumed: heartbeats report where it stands
                state.progress = state.progress._replace(step=event.start_step)
            self._say(
                f"training {event.total_steps} steps from step {event.start_step} on {event.train_examples} "
                f"examples{_validated_on(event)} ({event.trainable_parameters} trainable parameters)"
            )
        elif isinstance(event, Done):
            state.done = event
            self._say(f"training {event.status} at step {event.step}{_early_stop_line(event)}")
        elif isinstance(event, Error):
            state.error = event
            self._say(f"trainer error ({event.code}): {event.message}")

    def _metric(self, event: Step | Eval) -> None:
        record = {**msgspec.to_builtins(event), "attempt": self.spec.attempt, "at": self.clock().isoformat()}
        assert self.metrics is not None
        self.metrics.append(msgspec.json.encode(record) + b"\n")

    def _save_checkpoint(self, step: int, path: Path) -> None:
        if step in self.trainer.checkpoints:
            return
        gpu_ms = self.emitter.gpu_ms  # the attempt's GPU time when the trainer wrote it (credits past it)
        prefix = self.spec.checkpoint_prefix(step)
        size = upload_folder(self.bucket, path, prefix, clear=True)
        self.trainer.checkpoints[step] = prefix
        self.recorder.checkpoint(step, prefix, gpu_ms_total=gpu_ms)
        self._say(f"checkpoint at step {step} saved to {prefix} ({size} bytes)")
        if self.keep_checkpoints is not None:
            prune_job_checkpoints(self.bucket, self.spec.user_id, self.spec.job_id, self.keep_checkpoints)

    # ---- every heartbeat ----

    def _after_heartbeat(self, heartbeat: Heartbeat) -> None:
        self._sync_logs()
        self.spool.check(timeout=min(1.0, self.spec.heartbeat_interval_s / 2))
        if self._trainer_exited:  # the outcome is being recorded: nothing left to watch
            return
        job = self._report_progress()
        if not self.recorder.is_current(job):
            self._say(
                f"job is now {job.state} (attempt {job.attempt}): abandoning attempt {self.spec.attempt}"
            )
            self._stop_trainer("abandoned")
        elif job.state == JobState.STOPPING:
            self._stop_trainer("requested")
        elif job.state == JobState.PAUSING:
            self._stop_trainer("pausing")
        elif (gone := self._control_plane_gone(job)) is not None and self._orphaned is None:
            self._orphaned = f"{CONTROL_PLANE_GONE}: {gone}"
            self._say(f"{self._orphaned}: checkpointing and ending attempt {self.spec.attempt}")
            self._stop_trainer("orphaned")
        if self._stop_since is not None and time.monotonic() - self._stop_since > self.stop_grace_s:
            self._say(f"the trainer did not stop within {self.stop_grace_s:.0f} s: killing it")
            self._kill_trainer()

    def _control_plane_gone(self, job: JobView) -> str | None:
        """Why the control plane is gone, or None (see the module docstring)."""
        spool = self.spool
        if spool.gone is not None:
            return f"its heartbeat channel is closed ({spool.gone})"
        if spool.failed_in_a_row >= GONE_AFTER_FAILED_INTERVALS:
            return f"no heartbeat could be published for {spool.failed_in_a_row} intervals"
        return self.metering.stalled(job)

    def _report_progress(self) -> JobView:
        state = self.trainer
        progress = state.progress
        if progress.step == state.reported_step or state.total_steps is None:
            return self.recorder.view()
        try:
            job = self.recorder.progress(
                progress.step, state.total_steps, state.epoch, progress.loss, progress.tokens
            )
        except Conflict:  # the job left running/stopping or this attempt: the caller sees it
            return self.recorder.view()
        state.reported_step = progress.step
        return job

    # ---- stopping the trainer ----

    def _stop_trainer(self, why: str) -> None:
        with self._lock:
            if self._stop_why is not None:
                return
            self._stop_why = why
            self._stop_since = time.monotonic()
            started = self._proc is not None
        if why != "interrupted":
            self._say(f"stopping the trainer ({why})")
        if not started:
            return
        if why == "abandoned":  # superseded: the attempt that replaced it does the work; stop at once
            self._kill_trainer()
        else:
            self._signal_trainer()

    def _signal_trainer(self) -> None:
        """Ask the trainer to checkpoint and exit: the stop file, then SIGTERM (not once it has exited:
        its work folder may be gone by then, e.g. an interrupt racing the end of a run)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.work.stop_file.touch()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    def _kill_trainer(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    # ---- the outcome ----

    def _finish(self, status: int | None) -> Outcome:
        job = self.recorder.view()
        done, error = self.trainer.done, self.trainer.error
        if self._stop_why == "abandoned" or not self.recorder.is_current(job):
            self._say(f"attempt {self.spec.attempt} abandoned: the job is {job.state}")
            return Outcome.ABANDONED
        if done is not None and done.status == "succeeded" and status == 0:
            return self._succeeded(done)
        if job.state == JobState.STOPPING or self._stop_why == "requested":
            return self._stopped(job, done)
        if job.state == JobState.PAUSING:
            return self._paused(job, done)
        if self._stop_why == "interrupted":
            return self._retry("interrupted: the runner was asked to end", interrupted=True)
        if self._orphaned is not None:
            return self._retry(self._orphaned, interrupted=True)
        if done is not None and status == _TRAINER_STOPPED:
            return self._stopped(job, done)
        if status == _TRAINER_INVALID or (error is not None and not error.retryable):
            message = error.message if error is not None else "the trainer refused its input"
            return self._failed(f"{error.code if error else 'invalid'}: {message}")
        reason = error.message if error is not None else _describe_exit(status)
        return self._retry(f"training failed: {reason}")

    def _succeeded(self, done: Done) -> Outcome:
        if done.model_dir is None:
            return self._retry("the trainer reported success without a model folder")
        metrics = dict(done.metrics)
        if done.reason == "early_stopped":  # the step it stopped at, beside the best one it keeps
            metrics["early_stopped_at_step"] = float(done.step)
        try:
            weights = self._publish(Path(done.model_dir), metrics, {})
        except Exception as exc:
            log.exception("uploading the weights of %s failed", self.spec.job_id)
            return self._retry(f"uploading the weights failed: {type(exc).__name__}: {exc}")
        self.recorder.succeeded(metrics, weights)
        self._say(f"succeeded: model {self.spec.model_id} ({_weights_line(self.spec.model_id, weights)})")
        return Outcome.SUCCEEDED

    def _publish(self, folder: Path, metrics: dict[str, float], extra: dict[str, Any]) -> ModelWeights:
        """Upload the model in ``folder`` with the stop gate's verdict (``runners.trainer.stop_gate``)."""
        gate = self._stop_gate(folder)
        weights = publish_model(self.bucket, self.spec, folder, metrics, extra={**extra, "stop_gate": gate})
        return msgspec.structs.replace(weights, stop_gate=gate)

    def _stop_gate(self, folder: Path) -> dict[str, Any] | None:
        """Whether the model ends its answer to the dataset's first user message (None: not checked)."""
        if self.stop_gate_command is None:
            return None
        argv = [*self.stop_gate_command, "--base", str(self.work.base), "--model", str(folder)]
        prompt = _first_user_message(self.work.dataset)
        if prompt:
            argv.append(f"--prompt={prompt}")  # one argument, whatever the message starts with
        try:
            done = subprocess.run(argv, capture_output=True, timeout=STOP_GATE_TIMEOUT_S, check=True)
            gate: dict[str, Any] = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, msgspec.DecodeError, IndexError) as exc:
            self._say(f"the stop gate could not run ({type(exc).__name__}); the model is published unchecked")
            return None
        if gate.get("stops"):
            self._say(f"stop gate: the model ends its answer ({gate.get('new_tokens')} tokens)")
        else:
            self._say(
                f"stop gate: the model did not end its answer within {gate.get('max_new_tokens')} tokens; "
                "it is flagged as never stopping"
            )
        return gate

    def _stopped(self, job: JobView, done: Done | None) -> Outcome:
        if done is not None:
            step = done.step
        elif job.last_checkpoint is not None:
            step = job.last_checkpoint.step
        else:
            step = job.step
        reason = None if job.state == JobState.STOPPING else "stopped"
        self._record_stopped(step=step, reason=reason, done=done)
        self._say(f"stopped at step {step}")
        return Outcome.STOPPED

    def _paused(self, job: JobView, done: Done | None) -> Outcome:
        """The pausing job's trainer saved its checkpoint and exited: record ``paused`` at the last
        checkpoint's step (what a resume starts from); no model is published, nothing fails."""
        point = job.last_checkpoint
        step = point.step if point is not None else 0
        self.recorder.paused(step=step)
        self._say(
            f"paused at step {step}: the attempt ends, a resume continues from its checkpoint"
            if point is not None
            else "paused before its first checkpoint: a resume starts from the beginning"
        )
        return Outcome.PAUSED

    def _record_stopped(self, *, step: int | None = None, reason: str | None, done: Done | None) -> None:
        """Record the stop, with the job's last checkpoint published and registered as its model (a
        stopped job's model id answers); none when there is no checkpoint or it cannot be published."""
        self.recorder.stopped(step=step, reason=reason, weights=self._publish_last_checkpoint(done))

    def _publish_last_checkpoint(self, done: Done | None) -> ModelWeights | None:
        point = self.recorder.view().last_checkpoint
        if point is None:
            self._say("stopped before its first checkpoint: no model")
            return None
        folder = self.work.root / "stopped-model"
        metrics = {**(dict(done.metrics) if done is not None else {}), "steps": float(point.step)}
        try:
            model_from_checkpoint(self.bucket, point.path, folder, base_model_ref=self.spec.base_model)
            extra = {"from_checkpoint": {"step": point.step, "attempt": point.attempt}, "stopped": True}
            weights = self._publish(folder, metrics, extra)
        except Exception as exc:  # the stop is recorded all the same, with no model
            log.exception("publishing the last checkpoint of %s failed", self.spec.job_id)
            self._say(f"the checkpoint at step {point.step} could not be published as a model: {exc}")
            return None
        self._say(
            f"model {self.spec.model_id} published from the checkpoint at step {point.step} "
            f"({_weights_line(self.spec.model_id, weights)})"
        )
        return weights

    def _failed(self, error: str) -> Outcome:
        self._say(f"failed: {error}")
        self.recorder.failed(error)
        return Outcome.FAILED

    def _retry(self, reason: str, *, interrupted: bool = False) -> Outcome:
        """Record the next attempt (or the end of retries). ``interrupted``: the attempt ended for the
        platform's reasons (asked to end: ``shutdown``; its control plane gone: ``control_plane``),
        never the user's: its GPU time past its last checkpoint is credited, and with no retries
        left the job is stopped, not failed. Otherwise (training failed) the time is charged.
        """
        job = self.recorder.view()
        if job.state == JobState.STOPPING:
            return self._stopped(job, self.trainer.done)
        if job.state == JobState.PAUSING:  # the user's pause stands: resumed from the last checkpoint
            return self._paused(job, self.trainer.done)
        fault = ("control_plane" if self._orphaned else "shutdown") if interrupted else None
        if interrupted and not may_retry(
            retries_used(job.attempt, job.resumed_attempts), self.spec.max_retries
        ):
            self.recorder.credit_fault(fault)  # type: ignore[arg-type]
            self._record_stopped(reason=reason if self._orphaned else "interrupted", done=self.trainer.done)
            self._say(f"{reason}, with no retries left: stopped")
            return Outcome.STOPPED
        after = self.recorder.retry_or_fail(reason, self.spec.max_retries, fault=fault)
        self._say(f"{reason}; job is now {after.state}")
        return Outcome.RETRYING if after.state == JobState.RETRYING else Outcome.FAILED

    # ---- the log ----

    def _say(self, message: str) -> None:
        log.info("%s: %s", self.spec.job_id, message)
        self._append_log(f"{self.clock().isoformat(timespec='seconds')} [runner] {message}\n".encode())

    def _append_log(self, data: bytes) -> None:
        if self.log is not None:
            self.log.append(data if data.endswith(b"\n") else data + b"\n")

    def _sync_logs(self) -> None:
        for mirror in (self.log, self.metrics):
            if mirror is not None:
                try:
                    mirror.sync()
                except Exception:  # the next heartbeat tries again
                    log.exception("uploading %s failed", mirror.name)


class _MeteringWatch:
    """Whether the ledger still meters this attempt: its metered seq (``JobView.metered_seq``) is read
    after every heartbeat; once it was seen, a seq that does not move for ``stall_s`` is a stall."""

    def __init__(self, attempt: int, stall_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.attempt = attempt
        self.stall_s = stall_s
        self.monotonic = monotonic
        self.seq: int | None = None
        self.since = 0.0

    def stalled(self, job: JobView) -> str | None:
        seq = job.metered_seq.get(str(self.attempt))
        now = self.monotonic()
        if seq is None:  # not metered yet (no ledger heard it so far): nothing to compare with
            return None
        if seq != self.seq:
            self.seq, self.since = seq, now
            return None
        if now - self.since < self.stall_s:
            return None
        waited = now - self.since
        return f"nothing metered for {waited:.0f} s (since heartbeat {seq}) while heartbeats were sent"


def _weights_line(model_id: str, weights: ModelWeights) -> str:
    """The published weights as the job log tells them, labelled as ``model show`` labels them: the
    manifest's digest is ``weights_sha256``; the download's ``sha256`` (what a user checks the tar
    against, and ``model download`` checks) is the archive's, which ``model show`` prints."""
    return (
        f"weights {weights.size_bytes} bytes, weights_sha256 {weights.sha256} (of weights/SHA256SUMS); "
        f"the download's sha256 to check it against: `model show --model-id {model_id}`"
    )


def _validated_on(started: Started) -> str:
    return f", validated on {started.eval_examples}" if started.eval_examples else ""


def _early_stop_line(done: Done) -> str:
    """``: stopped early ...`` for a run early stopping ended, else empty."""
    if done.reason != "early_stopped":
        return ""
    best, loss = done.metrics.get("best_step"), done.metrics.get("eval_loss")
    at = f"; the model is the best checkpoint's, step {best:.0f}" if best is not None else ""
    of = f" (eval_loss {loss:.4f})" if loss is not None else ""
    return f" of {done.total_steps}: stopped early, the validation loss stopped improving{at}{of}"


def _first_user_message(dataset: Path) -> str | None:
    """The first user message of a processed dataset (chat records), or None."""
    try:
        with open(dataset, "rb") as fh:
            line = fh.readline()
        messages = msgspec.json.decode(line).get("messages") or []
    except (OSError, msgspec.DecodeError, AttributeError):
        return None
    found = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return found[0][:2000] if found and isinstance(found[0], str) else None


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "the trainer did not start"
    if status < 0:
        try:
            return f"the trainer was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"the trainer was killed by signal {-status}"
    return f"the trainer exited with status {status}"


# ---- python -m runners.job_runner ----


def _events_stream() -> IO[bytes]:
    """A private handle on stdout for heartbeat lines; stdout itself then goes to stderr."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.job_runner", description=__doc__.splitlines()[0])
    parser.add_argument("bucket_url", help="file:///abs/path or gs://bucket[/prefix]")
    parser.add_argument("run_object", help="the run.yaml object, users/<uid>/jobs/<jid>/run.yaml")
    parser.add_argument("--work-root", type=Path, default=None, help="default $TUNE_HOME/work")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="base models; default $TUNE_HOME/base-models"
    )
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from runners.attempt_spec import read_job_run
    from runners.backends.base import HEARTBEAT_SECRET_ENV
    from runners.heartbeat_relay import STDOUT_URL, StreamPublisher, open_publisher
    from runtime.settings import Settings
    from storage import open_bucket
    from storage.eventstore import open_user

    # The attempt's heartbeat secret: taken out of the environment, so the trainer never inherits it.
    heartbeat_secret = os.environ.pop(HEARTBEAT_SECRET_ENV, None) or None
    if heartbeat_secret is None:
        log.warning("no %s in the environment: this attempt's heartbeats go unsigned", HEARTBEAT_SECRET_ENV)
    stream = _events_stream()
    bucket = open_bucket(args.bucket_url)
    try:
        spec = read_job_run(bucket, args.run_object)
    except ValidationFailed as exc:
        log.error("%s", exc)
        return EXIT_BAD_SPEC
    publisher = (
        StreamPublisher(stream) if spec.heartbeat_url == STDOUT_URL else open_publisher(spec.heartbeat_url)
    )
    home = Settings.from_env().home
    runner = JobRunner(
        bucket,
        spec,
        app=open_user(bucket, spec.user_id),
        publisher=publisher,
        work_root=args.work_root or home / "work",
        cache_dir=args.cache_dir or home / "base-models",
        keep_workdir=args.keep_workdir,
        heartbeat_secret=heartbeat_secret,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: runner.interrupt())
    try:
        outcome = runner.run()
    finally:
        publisher.close()
    log.info("job %s attempt %d: %s", spec.job_id, spec.attempt, outcome)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
