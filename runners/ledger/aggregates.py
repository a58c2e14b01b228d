"""Loading and saving a user's Job and Budget aggregates directly, so one save can carry several.

``UserApp`` commands save one aggregate each; the ledger meters many jobs of a user, raises
their alerts and requests their stops in ONE commit per batch, so it acts on the
aggregates (their own methods check every rule) and calls ``Application.save`` once. A
lost race surfaces as eventsourcing's ``RecordConflictError``: reload and try again.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application

from domain.budget import Budget
from domain.job import Job

__all__ = ["load_budget", "load_job", "save"]


def load_job(app: Application[Any], job_id: str) -> Job | None:
    """The job as stored now, or None if the partition has no such job."""
    try:
        job = app.repository.get(Job.create_id(job_id))
    except AggregateNotFoundError:
        return None
    return job if isinstance(job, Job) else None


def load_budget(app: Application[Any], user_id: str) -> Budget | None:
    try:
        budget = app.repository.get(Budget.create_id(user_id))
    except AggregateNotFoundError:
        return None
    return budget if isinstance(budget, Budget) else None


def save(app: Application[Any], *aggregates: Job | Budget) -> int | None:
    """Save every aggregate with pending events in one commit; its last notification id (None: nothing)."""
    changed = [a for a in aggregates if a.pending_events]
    if not changed:
        return None
    recordings = app.save(*changed)
    return recordings[-1].notification.id if recordings else None
