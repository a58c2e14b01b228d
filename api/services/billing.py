"""Billing: the current month per GPU type and job with the budget, history, prices, a job's cost.

The billing view's current period is the latest month with usage; the views are shown as of
the clock's month by the projection's own rule (``projections.billing.as_of``).
"""

from __future__ import annotations

import msgspec

from api import schemas
from api.services.base import UserService
from domain.money import check_period, period_of
from projections.billing import as_of
from projections.replay import read_events
from projections.report import monthly_reports, report_document
from storage import layout

__all__ = ["BillingService"]


class _StoredBilling(schemas.Billing, kw_only=True):
    """``billing.json`` as stored: no current period before the first usage."""

    current_period: schemas.Period | None = None  # type: ignore[assignment]


class BillingService(UserService):
    """The caller's usage, costs and budget."""

    def _views(self) -> tuple[schemas.Billing, schemas.BillingHistory]:
        """The stored views as of the clock's month (``projections.billing.as_of``)."""
        stored = self.rt.view_or(layout.billing(self.user_id), _StoredBilling, _StoredBilling())
        history = self.rt.view_or(
            layout.billing_history(self.user_id), schemas.BillingHistory, schemas.BillingHistory()
        )
        billing, history = as_of(stored, history, period_of(self.rt.clock()), empty_period=_empty)
        return schemas.Billing(**msgspec.structs.asdict(billing)), history

    def usage(self) -> schemas.Billing:
        return self._views()[0]

    def periods(self) -> list[schemas.Period]:
        """Every month with usage, this month first, then the closed ones newest first."""
        billing, history = self._views()
        return [billing.current_period, *history.periods]

    def history(self) -> schemas.BillingHistory:
        return self._views()[1]

    def pricing(self) -> schemas.Pricing:
        return self.rt.view_or(layout.pricing(), schemas.Pricing, schemas.Pricing())

    def report(self, month: str) -> schemas.MonthlyReport:
        """The month's rows replayed from the user's events (an audit-grade read: it replays)."""
        check_period(month)
        events = (event for _, event in read_events(self.app))
        rows, serving = monthly_reports(events, month)
        document = report_document(rows, month, serving)
        return msgspec.convert(msgspec.to_builtins(document), schemas.MonthlyReport)

    def set_budget(self, request: schemas.BudgetRequest) -> schemas.BudgetView:
        limit = request.monthly_limit_usd_micros
        self.app.set_budget(limit, self.rt.clock(), thresholds_pct=request.thresholds_pct)
        self.committed()
        return self.usage().budget or schemas.BudgetView()


def _empty(period: str) -> schemas.Period:
    return schemas.Period(period=period, start_date=f"{period}-01")
