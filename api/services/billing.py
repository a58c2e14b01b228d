"""Billing: the current month per GPU type and job with the budget, history, prices, a job's cost.

The billing view's current period is the latest month with usage; when that
is older than the clock's month, the month it names is closed, so this
service shows an empty current month and lists the old one first in history.
"""

from __future__ import annotations

import msgspec

from api import schemas
from api.runtime import Runtime
from domain.money import check_period, period_of
from projections.replay import read_events
from projections.report import monthly_report, report_document
from storage import layout

__all__ = ["BillingService"]


class _StoredBilling(schemas.Billing, kw_only=True):
    """``billing.json`` as stored: no current period before the first usage."""

    current_period: schemas.Period | None = None  # type: ignore[assignment]


class BillingService:
    """The caller's usage, costs and budget."""

    def __init__(self, runtime: Runtime, user_id: str) -> None:
        self.rt = runtime
        self.user_id = user_id

    def _views(self) -> tuple[schemas.Billing, schemas.BillingHistory]:
        stored = self.rt.view_or(layout.billing(self.user_id), _StoredBilling, _StoredBilling())
        history = self.rt.view_or(
            layout.billing_history(self.user_id), schemas.BillingHistory, schemas.BillingHistory()
        )
        now = period_of(self.rt.clock())
        current = stored.current_period
        if current is not None and current.period == now:
            fields = msgspec.structs.asdict(stored)
            return schemas.Billing(**fields), history
        if current is not None:  # that month is over: it is history now
            others = [p for p in history.periods if p.period != current.period]
            history = schemas.BillingHistory(
                periods=[current, *others], position=max(history.position, stored.position)
            )
        budget = stored.budget
        billing = schemas.Billing(
            current_period=_empty(now),
            budget=budget,
            alerts=[],
            remaining=budget.monthly_limit if budget else None,
            remaining_usd_micros=budget.monthly_limit_usd_micros if budget else None,
            position=stored.position,
        )
        return billing, history

    def usage(self) -> schemas.Billing:
        return self._views()[0]

    def history(self) -> schemas.BillingHistory:
        return self._views()[1]

    def pricing(self) -> schemas.Pricing:
        return self.rt.view_or(layout.pricing(), schemas.Pricing, schemas.Pricing())

    def job_cost(self, job_id: str) -> schemas.JobCostReport:
        from api.services.jobs import JobService  # jobs asks billing for the budget

        status = JobService(self.rt, self.user_id).status(job_id)
        billing, history = self._views()
        periods = [billing.current_period, *history.periods]
        rows = [
            msgspec.structs.replace(row, period=period.period)
            for period in periods
            for row in period.jobs
            if row.job_id == job_id
        ]
        return schemas.JobCostReport(
            job_id=job_id,
            status=status.status,
            cost=status.cost,
            cost_usd_micros=status.cost_usd_micros,
            estimate=status.estimate,
            estimate_usd_micros=status.estimate_usd_micros,
            max_cost=status.max_cost,
            max_cost_usd_micros=status.max_cost_usd_micros,
            gpu_metrics=status.gpu_metrics,
            periods=rows,
        )

    def report(self, month: str) -> schemas.MonthlyReport:
        """The month's rows replayed from the user's events (an audit-grade read: it replays)."""
        check_period(month)
        app = self.rt.user_app(self.user_id)
        events = (event for _, event in read_events(app))
        document = report_document(monthly_report(events, month), month)
        return msgspec.convert(msgspec.to_builtins(document), schemas.MonthlyReport)

    def set_budget(self, request: schemas.BudgetRequest) -> schemas.BudgetView:
        self.rt.user_app(self.user_id).set_budget(
            request.monthly_limit_usd_micros, self.rt.clock(), thresholds_pct=request.thresholds_pct
        )
        self.rt.committed(layout.user_partition(self.user_id))
        return self.usage().budget or schemas.BudgetView()


def _empty(period: str) -> schemas.Period:
    return schemas.Period(period=period, start_date=f"{period}-01")
