"""The job's events as a runner (or the dispatcher) records them, through ``UserApp``.

Other writers append to the same job at the same time (the ledger meters usage, the API
records stop requests), so a command that loses the race (``Conflict`` with code
``version_conflict``) is tried again on the fresh state; every other refusal is raised.

A runner's recorder holds its attempt's ``lease`` (and ``placement``): ``started`` records
them in ``Started``, and every report after it carries the lease, so the job refuses the
reports of a superseded runner (``Conflict`` code ``superseded``, raised, never retried). The
dispatcher's recorder has none: the control plane's commands are not fenced.

``retry_or_fail`` is the one retry rule (``domain.metering.may_retry``): attempts run while
``attempt <= max_retries`` (so ``1 + max_retries`` in all; attempts begun by a resume after a pause
are not counted: ``domain.job.retries_used``), each resuming from the job's last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from domain.errors import Conflict
from domain.job import retries_used
from domain.job_states import REPORTING_STATES
from domain.metering import may_retry
from domain.model import ModelWeights
from domain.placement import Placement
from domain.read_models import JobView
from storage.clock import Clock, utc_now

if TYPE_CHECKING:
    from domain.applications import UserApp

__all__ = ["JobRecorder"]

T = TypeVar("T")
_TRIES = 8
_PAUSE_S = 0.02


class JobRecorder:
    """Records one job's state changes; ``attempt`` is the attempt this recorder reports for.

    Args:
        app: the job owner's ``UserApp``.
        job_id: the job.
        attempt: the attempt being run (0 when recording for no particular attempt).
        clock: the time every event carries.
        lease: the attempt's fencing lease (a runner's; None: the control plane records).
        placement: where the backend placed the attempt (recorded in ``Started``).
    """

    def __init__(
        self,
        app: UserApp,
        job_id: str,
        attempt: int = 0,
        *,
        clock: Clock = utc_now,
        lease: str | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.app = app
        self.job_id = job_id
        self.attempt = attempt
        self.clock = clock
        self.lease = lease
        self.placement = placement

    def view(self) -> JobView:
        return self.app.get_job(self.job_id)

    def started(self) -> JobView:
        return self._write(
            lambda: self.app.start_job(
                self.job_id, self.attempt, self.clock(), lease=self.lease, placement=self.placement
            )
        )

    def queued(self) -> JobView:
        return self._write(lambda: self.app.queue_job(self.job_id, self.clock()))

    def progress(
        self, step: int, total_steps: int | None, epoch: float | None, loss: float | None, tokens: int
    ) -> JobView:
        return self._write(
            lambda: self.app.report_progress(
                self.job_id,
                self.attempt,
                step,
                total_steps,
                epoch,
                loss,
                tokens,
                self.clock(),
                lease=self.lease,
            )
        )

    def activity(self, activity: str | None) -> JobView:
        """What the attempt is busy with before its first step (None: done with it)."""
        return self._write(
            lambda: self.app.report_activity(
                self.job_id, self.attempt, activity, self.clock(), lease=self.lease
            )
        )

    def checkpoint(self, step: int, path: str, *, gpu_ms_total: int | None = None) -> JobView:
        """A checkpoint at ``step`` lies at ``path``, written when the attempt had used
        ``gpu_ms_total`` GPU milliseconds (a platform fault credits the time past it)."""
        return self._write(
            lambda: self.app.save_checkpoint(
                self.job_id,
                self.attempt,
                step,
                path,
                self.clock(),
                lease=self.lease,
                gpu_ms_total=gpu_ms_total,
            )
        )

    def stopped(
        self, *, step: int | None = None, reason: str | None = None, weights: ModelWeights | None = None
    ) -> JobView:
        """Stopped; ``weights``: the last checkpoint published as the job's model (registered with it)."""
        return self._write(
            lambda: self.app.mark_stopped(
                self.job_id, self.clock(), step=step, reason=reason, lease=self.lease, weights=weights
            )
        )

    def paused(self, *, step: int | None = None) -> JobView:
        """The pausing job's attempt ended after saving its checkpoint (at ``step``): ``paused``."""
        return self._write(
            lambda: self.app.mark_paused(self.job_id, self.clock(), step=step, lease=self.lease)
        )

    def succeeded(self, metrics: Mapping[str, Any], weights: ModelWeights) -> JobView:
        return self._write(
            lambda: self.app.mark_succeeded(
                self.job_id, self.clock(), metrics=metrics, weights=weights, lease=self.lease
            )
        )

    def failed(self, error: str) -> JobView:
        return self._write(
            lambda: self.app.mark_failed(self.job_id, error[:10_000], self.clock(), lease=self.lease)
        )

    def credit_fault(self, reason: str) -> JobView:
        """This recorder's attempt ended for the platform's reasons (``domain.job.PLATFORM_FAULTS``)
        without a retry (e.g. stopped on an interrupt with no retries left): credit it."""
        return self._write(
            lambda: self.app.credit_platform_fault(self.job_id, self.attempt, reason, self.clock())
        )

    def lost(self, last_heartbeat_at: datetime | None) -> JobView:
        """The attempt's runner is gone: ``lost``, a platform fault (credited past its checkpoint)."""
        return self._write(lambda: self.app.mark_lost(self.job_id, last_heartbeat_at, self.clock()))

    def retry_or_fail(self, reason: str, max_retries: int, *, fault: str | None = None) -> JobView:
        """Announce the next attempt if the retry budget allows, else mark the job failed.

        ``fault`` (one of ``domain.job.PLATFORM_FAULTS``, e.g. ``"shutdown"`` for a run interrupted by
        the platform shutting down, ``"control_plane"`` when it lost its control plane): the attempt
        ended for the platform's reasons, so its GPU time past its last checkpoint is credited in
        the same commit. Leave it out for a failure of the user's config or data (charged)."""

        def decide() -> JobView:
            job = self.view()
            now = self.clock()
            if may_retry(retries_used(job.attempt, job.resumed_attempts), max_retries):
                return self.app.retry_job(
                    self.job_id, job.attempt + 1, reason[:10_000], now, lease=self.lease, fault=fault
                )
            error = f"{reason} (attempt {job.attempt} of {max_retries + 1}; no retries left)"
            return self.app.mark_failed(self.job_id, error[:10_000], now, lease=self.lease, fault=fault)

        return self._write(decide)

    def is_current(self, job: JobView) -> bool:
        """Whether ``job`` is still running this recorder's attempt under its lease (not finished,
        retried, lost, or started by another runner)."""
        return (
            job.attempt == self.attempt
            and job.state in REPORTING_STATES
            and (self.lease is None or job.lease == self.lease)
        )

    @staticmethod
    def _write(command: Callable[[], T]) -> T:
        for tried in range(1, _TRIES + 1):
            try:
                return command()
            except Conflict as exc:
                if exc.code != "version_conflict" or tried == _TRIES:
                    raise
            time.sleep(_PAUSE_S * tried)
        raise AssertionError("unreachable")
