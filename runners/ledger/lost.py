"""``LostJobDetector``: a running job whose heartbeats stopped for 3 intervals is lost.

``sweep(now)`` looks at every attempt in ``LiveJobs`` not heard from for ``intervals``
(3) heartbeat intervals (the job's own ``heartbeat_interval_seconds``). It loads the job;
if that attempt is still ``running`` or ``stopping`` and its progress reports
(``Job.last_heartbeat_at``) are just as old, one commit (``UserApp.declare_lost``) records:

- ``Lost(last_heartbeat_at)``, then
- from ``stopping``: ``Stopped`` (the stop that was asked for, reason kept);
- else ``Retrying(attempt + 1)`` while ``domain.metering.may_retry`` allows (the job's
  ``max_retries``), the next attempt resuming from the last checkpoint; else ``Failed``.

Billing needs nothing here: a lost attempt is billed exactly the heartbeats it sent (up to
its last heartbeat), never for the silence after it. Heartbeats of the lost attempt that
still arrive later (a runner that was only cut off) are billed too: they are GPU time it
really held, and the domain accepts late usage of a started attempt.

A job that moved on meanwhile (finished, retried or marked lost by the dispatcher, which
sees its runner process exit) is forgotten; one left ``retrying`` is handed to ``on_retry`` too
(its runner announced the next attempt, maybe to a control plane that is gone since).
``watch`` adds an attempt that has not sent a heartbeat yet (the dispatcher calls it at launch;
``watch_running_jobs`` seeds the table after a restart from the users' jobs.json views).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from domain.base import check_utc
from domain.errors import Conflict, PlatformError
from domain.job_states import REPORTING_STATES, JobState
from domain.metering import job_policy
from domain.read_models import JobView
from projections import jobs as job_views
from projections import users as user_views
from projections.render import iso
from runners.ledger.live import LiveJob, LiveJobs
from storage import Bucket, ObjectNotFound, layout

__all__ = ["LOST_AFTER_INTERVALS", "LostJob", "LostJobDetector", "watch_running_jobs"]

log = logging.getLogger(__name__)

LOST_AFTER_INTERVALS = 3

OpenUserApp = Callable[[str], Any]
Notify = Callable[[str], None]
OnRetry = Callable[[str, str], None]


class LostJob(NamedTuple):
    user_id: str
    job_id: str
    attempt: int
    last_heartbeat_at: datetime | None
    outcome: JobState
    """``retrying``, ``failed`` or ``stopped``."""


class LostJobDetector:
    """Marks quiet attempts lost and retries them by policy.

    Args:
        open_user_app: the ``UserApp`` of a user id.
        live: the attempts the ledger has heard from (shared with the worker).
        intervals: heartbeat intervals of silence before an attempt is lost.
        notify: called with ``users/<uid>`` after a job was changed (the projector's ``notify``).
        on_retry: called with ``(user_id, job_id)`` after a job was set to retry (the
            dispatcher's ``submit``, so the next attempt is launched).
    """

    def __init__(
        self,
        open_user_app: OpenUserApp,
        live: LiveJobs,
        *,
        intervals: int = LOST_AFTER_INTERVALS,
        notify: Notify | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        if intervals < 1:
            raise ValueError("intervals must be at least 1")
        self.open_user_app = open_user_app
        self.live = live
        self.intervals = intervals
        self.notify = notify
        self.on_retry = on_retry

    def watch(self, user_id: str, job_id: str, attempt: int, at: datetime, *, interval_ms: int) -> None:
        """Expect heartbeats from ``attempt`` of the job from ``at`` on (if nothing newer is known)."""
        self.live.record(
            LiveJob(user_id=user_id, job_id=job_id, attempt=attempt, interval_ms=interval_ms, last_seen=at)
        )

    def sweep(self, now: datetime) -> list[LostJob]:
        """Mark every attempt quiet for ``intervals`` intervals lost; return what was done."""
        now = check_utc(now, where="now")
        found = []
        for entry in self.live.quiet(now, self.intervals):
            try:
                lost = self._check(entry, now)
            except Conflict as exc:
                if exc.code != "version_conflict":
                    raise
                continue  # someone wrote the job meanwhile: look again next sweep
            except PlatformError as exc:
                log.warning("lost-job check of %s: %s", entry.job_id, exc)
                self.live.forget(entry)
                continue
            if lost is not None:
                found.append(lost)
        return found

    def _check(self, entry: LiveJob, now: datetime) -> LostJob | None:
        app = self.open_user_app(entry.user_id)
        job = _job(app, entry.job_id)
        if job is None or job.attempt != entry.attempt or job.state not in REPORTING_STATES:
            self.live.forget(entry)
            if job is not None and job.state == JobState.RETRYING and self.on_retry is not None:
                # its runner announced the next attempt (e.g. an orphan that found its control plane
                # gone): a dispatcher started after it never heard of the run, so hand the job over
                # (a dispatcher that knows the job ignores it)
                self.on_retry(entry.user_id, entry.job_id)
            return None
        silence = timedelta(milliseconds=self.intervals * entry.interval_ms)
        reported = job.last_heartbeat_at
        if reported is not None and now - reported <= silence:  # its runner still reports progress
            self.live.record(msgspec.structs.replace(entry, last_seen=reported))
            return None
        last = max((t for t in (entry.last_at, reported) if t is not None), default=None)
        reason = (
            f"no heartbeat from attempt {entry.attempt} for {self.intervals} intervals "
            f"({self.intervals * entry.interval_ms / 1000:g} s) since {iso(last) or 'it started'}"
        )
        outcome = app.declare_lost(job.job_id, last, reason, now, expected_version=job.version).state
        self.live.forget(entry)
        log.warning(
            "job %s attempt %d lost (last heartbeat %s): %s", job.job_id, entry.attempt, iso(last), outcome
        )
        if self.notify is not None:
            self.notify(layout.user_partition(entry.user_id))
        if outcome == JobState.RETRYING and self.on_retry is not None:
            self.on_retry(entry.user_id, entry.job_id)
        return LostJob(entry.user_id, entry.job_id, entry.attempt, last, outcome)


def _job(app: Any, job_id: str) -> JobView | None:
    """The job as stored now, or None if the partition has no such job."""
    try:
        return app.get_job(job_id)  # type: ignore[no-any-return]
    except PlatformError:  # NotFound, or an id no job can have
        return None


def watch_running_jobs(
    detector: LostJobDetector, bucket: Bucket, now: datetime, *, grace: timedelta = timedelta(0)
) -> int:
    """Seed ``detector`` after a restart: every running or stopping job in the users' jobs.json views.

    Reads ``platform/metadata/users.json`` and each user's ``metadata/jobs.json`` (views the
    projector keeps); each job is watched from ``now`` with its own interval, so a runner that
    died while the ledger was down is found ``intervals`` intervals later (``grace`` later still:
    how long the transport may hold back heartbeats a dead ledger had received). Returns how many.
    """
    try:
        data = bucket.read(layout.users())
        users = msgspec.json.decode(data, type=user_views.UsersView)
    except ObjectNotFound:
        return 0
    watched = 0
    for user in users.users:
        try:
            data = bucket.read(layout.jobs(user.user_id))
        except ObjectNotFound:
            continue
        app = detector.open_user_app(user.user_id)
        for row in msgspec.json.decode(data, type=job_views.JobsView).jobs:
            if row.status not in REPORTING_STATES:
                continue
            job = _job(app, row.job_id)
            if job is None or job.state not in REPORTING_STATES:
                continue
            interval_ms = job_policy(job.config).heartbeat_interval_ms
            detector.watch(user.user_id, job.job_id, job.attempt, now + grace, interval_ms=interval_ms)
            watched += 1
    return watched
