"""Billing: the current month per GPU type and job with the budget, history, prices, a job's cost.

The billing view's current period is the latest month with usage; when that
is older than the clock's month, the month it names is closed, so this
service shows an empty current month and lists the old one first in history.
"""

from __future__ import annotations

import msgspec

from api import schemas, views
from api.runtime import Runtime
from api.services.jobs import JobService
from domain.money import period_of

__all__ = ["BillingService"]


class BillingService:
    """The caller's usage, costs and budget."""

    def __init__(self, runtime: Runtime, user_id: str) -> None:
        self.rt = runtime
        self.user_id = user_id

    def _views(self) -> tuple[schemas.Billing, schemas.BillingHistory]:
        billing = self.rt.view_or(views.billing(self.user_id), schemas.Billing, schemas.Billing())
        history = self.rt.view_or(
            views.billing_history(self.user_id), schemas.BillingHistory, schemas.BillingHistory()
        )
        now = period_of(self.rt.clock())
        current = billing.current_period
        if current.period and current.period != now:  # that month is over: it is history now
            history = schemas.BillingHistory(
                periods=[current, *[p for p in history.periods if p.period != current.period]],
                position=max(history.position, billing.position),
            )
            limit = billing.budget.monthly_limit_usd_micros if billing.budget else None
            billing = schemas.Billing(
                current_period=_empty(now),
                budget=billing.budget,
                alerts=[],
                remaining=billing.budget.monthly_limit if billing.budget else None,
                remaining_usd_micros=limit,
                position=billing.position,
            )
        elif not current.period:
            billing.current_period = _empty(now)
            if billing.budget is not None and billing.remaining_usd_micros is None:
                billing.remaining_usd_micros = billing.budget.monthly_limit_usd_micros
                billing.remaining = billing.budget.monthly_limit
        return billing, history

    def usage(self) -> schemas.Billing:
        return self._views()[0]

    def history(self) -> schemas.BillingHistory:
        return self._views()[1]

    def pricing(self) -> schemas.Pricing:
        return self.rt.view_or(views.pricing(), schemas.Pricing, schemas.Pricing())

    def job_cost(self, job_id: str) -> schemas.JobCostReport:
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

    def set_budget(self, request: schemas.BudgetRequest) -> schemas.Billing:
        self.rt.user_app(self.user_id).set_budget(
            request.monthly_limit_usd_micros, sorted(set(request.thresholds_pct)), at=self.rt.clock()
        )
        self.rt.committed(views.user_root(self.user_id))
        return self.usage()


def _empty(period: str) -> schemas.Period:
    return schemas.Period(period=period, start_date=f"{period}-01")
