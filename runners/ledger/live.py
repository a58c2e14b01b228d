"""``LiveJobs``: the attempts the ledger has heard from lately, in memory, thread-safe.

The worker records each job's latest metered heartbeat here (when it arrived by the
ledger's clock, the attempt, its interval and what its next interval will cost); the
budget check adds up the next intervals of a user's live jobs, and the lost-job detector
looks for entries that went quiet. Nothing here is the record: after a restart the table
fills again within one heartbeat interval (and ``LostJobDetector.watch`` seeds it).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import msgspec

__all__ = ["LiveJob", "LiveJobs"]


class LiveJob(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    job_id: str
    attempt: int
    interval_ms: int
    last_seen: datetime
    """When the ledger last metered a heartbeat of this attempt (the ledger's clock)."""
    last_at: datetime | None = None
    """The ``at`` of that heartbeat (the runner's clock); None if only watched."""
    next_usd_micros: int = 0
    final: bool = False
    """The attempt sent its final heartbeat."""

    def quiet_since(self, now: datetime, intervals: int) -> bool:
        """No heartbeat for more than ``intervals`` intervals."""
        return now - self.last_seen > timedelta(milliseconds=intervals * self.interval_ms)


class LiveJobs:
    """Entries by user, then job; a later attempt replaces an earlier one."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, LiveJob]] = {}
        self._lock = threading.Lock()

    def record(self, entry: LiveJob) -> None:
        """Keep ``entry`` unless an entry of a later attempt is there."""
        with self._lock:
            jobs = self._users.setdefault(entry.user_id, {})
            old = jobs.get(entry.job_id)
            if old is None or old.attempt <= entry.attempt:
                jobs[entry.job_id] = entry

    def get(self, user_id: str, job_id: str) -> LiveJob | None:
        with self._lock:
            return self._users.get(user_id, {}).get(job_id)

    def running(self, user_id: str, now: datetime, intervals: int) -> list[LiveJob]:
        """The user's attempts still beating: not final and heard from within ``intervals`` intervals."""
        with self._lock:
            entries = list(self._users.get(user_id, {}).values())
        return [e for e in entries if not e.final and not e.quiet_since(now, intervals)]

    def quiet(self, now: datetime, intervals: int) -> list[LiveJob]:
        """Every entry not heard from for more than ``intervals`` intervals."""
        with self._lock:
            entries = [e for jobs in self._users.values() for e in jobs.values()]
        return [e for e in entries if e.quiet_since(now, intervals)]

    def forget(self, entry: LiveJob) -> None:
        """Drop ``entry`` (only if it is still the one recorded)."""
        with self._lock:
            jobs = self._users.get(entry.user_id, {})
            if jobs.get(entry.job_id) == entry:
                del jobs[entry.job_id]
                if not jobs:
                    del self._users[entry.user_id]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(jobs) for jobs in self._users.values())
