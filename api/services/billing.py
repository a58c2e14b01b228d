"""Billing: the current month per GPU type and job with the budget, history, prices, a job's cost.

The billing view's current period is the latest month with usage; the views are shown as of
the clock's month by the projection's own rule (``projections.billing.as_of``). Usage reads
``billing.json`` alone (the current month, the budget: never the history). The history is served
whole, or in pages of months newest first (``limit``, ``after``: the cursor style of
``api.services.pages``, a cursor holding the last month sent); the stored views are decoded once
per stored version (``ViewStore.read_as``), so a page costs what it holds.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from api import schemas
from api.services.base import UserService
from api.services.pages import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from domain.errors import ValidationFailed
from domain.money import check_period, period_of
from projections.billing import current_as_of, history_as_of
from projections.replay import read_events
from projections.report import monthly_reports, report_csv, report_document
from storage import ObjectNotFound, layout

__all__ = ["HISTORY_LISTING", "BillingService"]

HISTORY_LISTING = "billing_history"
"""The listing a history cursor names (``api.services.pages.encode_cursor``)."""


_T = TypeVar("_T", bound=msgspec.Struct)


class _StoredBilling(schemas.Billing, kw_only=True):
    """``billing.json`` as stored: no current period before the first usage."""

    current_period: schemas.Period | None = None  # type: ignore[assignment]


class BillingService(UserService):
    """The caller's usage, costs and budget."""

    def _stored(self) -> _StoredBilling:
        return self._read(layout.billing(self.user_id), _StoredBilling)

    def _read(self, name: str, type: type[_T]) -> _T:
        """The view ``name`` decoded (shared, read-only: decoded once per stored version), or empty."""
        try:
            return self.rt.views.read_as(name, type)[0]  # type: ignore[no-any-return]
        except ObjectNotFound:
            return type()

    def _month(self) -> str:
        return period_of(self.rt.clock())

    def usage(self) -> schemas.Billing:
        """This month as of the clock, from ``billing.json`` alone."""
        billing = current_as_of(self._stored(), self._month(), empty_period=_empty)
        return schemas.Billing(**msgspec.structs.asdict(billing))

    def _history(self) -> schemas.BillingHistory:
        history = self._read(layout.billing_history(self.user_id), schemas.BillingHistory)
        return history_as_of(self._stored(), history, self._month())  # type: ignore[no-any-return]

    def periods(self) -> list[schemas.Period]:
        """Every month with usage, this month first, then the closed ones newest first."""
        return [self.usage().current_period, *self._history().periods]

    def history(self, limit: int | None = None, after: str | None = None) -> schemas.BillingHistory:
        """Closed months, newest first: every one without ``limit`` and ``after``, else a page of at
        most ``limit`` (``DEFAULT_LIMIT`` if only ``after`` is given) of those older than ``after``."""
        history = self._history()
        if limit is None and after is None:
            return history
        size = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= size <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be 1 to {MAX_LIMIT}, not {size}", where="limit")
        periods = history.periods
        start = 0
        if after is not None:
            last = decode_cursor(HISTORY_LISTING, after)
            start = next((n for n, p in enumerate(periods) if p.period < last), len(periods))
        page = periods[start : start + size]
        more = start + size < len(periods)
        cursor = encode_cursor(HISTORY_LISTING, page[-1].period) if more else None
        return schemas.BillingHistory(periods=page, position=history.position, has_more=more, next=cursor)

    def pricing(self) -> schemas.Pricing:
        return self.rt.view_or(layout.pricing(), schemas.Pricing, schemas.Pricing())

    def report(self, month: str) -> schemas.MonthlyReport:
        """The month's rows replayed from the user's events (an audit-grade read: it replays)."""
        check_period(month)
        events = (event for _, event in read_events(self.app))
        rows, serving = monthly_reports(events, month)
        document = report_document(rows, month, serving)
        return msgspec.convert(msgspec.to_builtins(document), schemas.MonthlyReport)

    def report_csv(self, month: str) -> str:
        """The month's report as CSV (``projections.report.report_csv``, what ``tune admin report``
        writes), replayed as ``report`` is."""
        check_period(month)
        rows, serving = monthly_reports((event for _, event in read_events(self.app)), month)
        return report_csv(rows, serving)

    def set_budget(self, request: schemas.BudgetRequest) -> schemas.BudgetView:
        limit = request.monthly_limit_usd_micros
        self.app.set_budget(limit, self.rt.clock(), thresholds_pct=request.thresholds_pct)
        self.committed()
        return self.usage().budget or schemas.BudgetView()


def _empty(period: str) -> schemas.Period:
    return schemas.Period(period=period, start_date=f"{period}-01")
