"""A user's spend per billing period, folded from their events by the fold billing.json uses.

``UserSpend.refresh(app)`` folds the user's ``Job.Submitted``, ``Job.UsageMetered``,
``Job.UsageCredited`` and ``ServingUsage.Metered`` (chat completions: the budget counts them)
events past the last position it read (only those topics are decoded), through
``projections.billing.fold``: the ledger's limit decisions and the user's billing.json are
the same function of the same events, so they agree to the micro-dollar; spend is net (credits
count, as on the bill). ``after(events)``
folds events not saved yet (a batch's pending ``UsageMetered``) onto a fork; ``advance`` takes
that state once they are saved, so the ledger's own commit is not read back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain.job import Job
from domain.serving import ServingUsage
from projections import billing, usage

__all__ = ["UserSpend"]

_TOPICS = (
    get_topic(Job.Submitted),
    get_topic(Job.UsageMetered),
    get_topic(Job.UsageCredited),
    get_topic(ServingUsage.Metered),
)
_PAGE = 1000


class UserSpend:
    """One user's billing state as far as ``position`` (a notification id of their partition)."""

    def __init__(self) -> None:
        self.state = billing.BillingState()
        self.position = 0

    def refresh(self, app: Application[Any]) -> None:
        """Fold the events appended since the last refresh."""
        head = app.recorder.max_notification_id() or 0
        while self.position < head:
            page = app.recorder.select_notifications(
                start=self.position + 1, limit=_PAGE, stop=head, topics=_TOPICS
            )
            for notification in page:
                billing.fold(self.state, app.mapper.to_domain_event(notification))
            if len(page) < _PAGE:
                break
            self.position = page[-1].id
        self.position = head

    def advance(self, first: int | None, last: int | None, after: billing.BillingState) -> bool:
        """Take ``after`` (what ``after()`` gave for these events, in this order, before they were
        saved) as the state past this process's commit (notification ids ``first..last``), if
        the commit directly follows ``position``; else leave it to the next ``refresh``, which
        reads whatever came between. True if taken."""
        if first is None or last is None or first != self.position + 1:
            return False
        self.state, self.position = after, last
        return True

    def after(self, events: Iterable[Any]) -> billing.BillingState:
        """The state with ``events`` (not saved yet) folded in; this object is unchanged (a fork of its
        state: the months the events touch are copied once, not once an event)."""
        state = self.state.fork()
        for event in events:
            state = billing.fold(state, event)
        return state

    @staticmethod
    def period_total(state: billing.BillingState, period: str) -> int:
        """The user's spend in ``period`` (0 if nothing was metered in it)."""
        found = state.periods.get(period)
        return 0 if found is None else found.total_usd_micros

    @staticmethod
    def period_total_but(state: billing.BillingState, period: str, job_ids: Collection[str]) -> int:
        """The user's spend in ``period`` on every job but ``job_ids``."""
        found = state.periods.get(period)
        if found is None:
            return 0
        held = sum(usage.cost_usd_micros(found.jobs.get(job_id, ())) for job_id in job_ids)
        return found.total_usd_micros - held
