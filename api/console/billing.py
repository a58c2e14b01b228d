"""The console's billing page: this month by GPU type and by job, a chart of past months, the budget
(its form, thresholds and the alerts raised), the price list and the monthly CSV report.

Every figure is the API's (``BillingService``: ``GET /billing/usage``, ``/history``, ``/pricing``,
``/report``), shown exactly (``domain.money.format_usd``) with the micro-dollars beside it in a
``data-usd-micros`` attribute. The budget form is ``PUT /billing/budget``: dollars as text
(``domain.money.parse_usd``: exact, at most six decimal places), thresholds as percents.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Redirect, Response, Template

from api import schemas
from api.auth import Principal
from api.services import BillingService
from domain.errors import ValidationFailed
from domain.money import format_usd, parse_usd

__all__ = ["BillingPages"]

JOB_ROWS = 100
"""The by-job table lists the month's most expensive jobs, at most this many (the CSV report lists all)."""
CHART_MONTHS = 12
"""The chart shows this month and up to this many months before it, oldest first."""
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


class BudgetForm(msgspec.Struct, forbid_unknown_fields=False):
    """The budget form: the monthly limit in dollars (empty: no budget), thresholds like ``50, 80, 100``."""

    monthly_limit: Annotated[str, msgspec.Meta(max_length=40)] = ""
    thresholds: Annotated[str, msgspec.Meta(max_length=200)] = ""

    def request(self) -> schemas.BudgetRequest:
        """The form as ``PUT /billing/budget``'s body (400 naming the field that is not one)."""
        limit = parse_usd(self.monthly_limit, where="monthly_limit") if self.monthly_limit.strip() else None
        parts = [p for p in re.split(r"[,\s%]+", self.thresholds) if p]
        if not all(p.isdigit() for p in parts):
            raise ValidationFailed("thresholds are whole percents like 50, 80, 100", where="thresholds")
        body: dict[str, Any] = {"monthly_limit_usd_micros": limit or None}
        if parts:
            body["thresholds_pct"] = [int(p) for p in parts]
        try:
            return msgspec.convert(body, schemas.BudgetRequest)
        except msgspec.ValidationError as exc:
            raise ValidationFailed(str(exc), where="budget") from exc


def _chart(periods: list[schemas.Period]) -> dict[str, list[Any]]:
    months = sorted(periods[: CHART_MONTHS + 1], key=lambda p: p.period)
    return {
        "months": [p.period for p in months],
        "usd_micros": [p.total_cost_usd_micros for p in months],
    }


class BillingPages(Controller):
    """``/console/billing``: the page, the budget form, the CSV report."""

    path = "/billing"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def billing_page(
        self, caller: NamedDependency[Principal], billing: NamedDependency[BillingService]
    ) -> Template:
        """This month, past months, the budget and its alerts, the prices, the report's form."""
        usage = billing.usage()
        history = billing.history().periods
        period = usage.current_period
        budget = usage.budget
        limit = budget.monthly_limit_usd_micros if budget else None
        context = {
            "title": "Billing",
            "nav": "billing",
            "caller": caller,
            "usage": usage,
            "period": period,
            "gpus": sorted(period.usage_breakdown.items()),
            "jobs": sorted(period.jobs, key=lambda j: (-j.cost_usd_micros, j.job_id))[:JOB_ROWS],
            "job_rows": len(period.jobs),
            "history": history,
            "chart": _chart([period, *history]),
            "budget": budget,
            "budget_limit": "" if limit is None else format_usd(limit, grouping=False).lstrip("$"),
            "thresholds": ", ".join(str(t) for t in (budget.thresholds_pct if budget else [50, 80, 100])),
            "month_pct": min(100, period.total_cost_usd_micros * 100 // limit) if limit else None,
            "alerts": usage.alerts,
            "pricing": billing.pricing(),
            "months": [period.period, *(p.period for p in history)],
        }
        return Template("billing.html", context=context)

    @post("/budget", sync_to_thread=True, status_code=303)
    def set_budget(
        self,
        data: Annotated[BudgetForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        billing: NamedDependency[BillingService],
    ) -> Redirect:
        """``PUT /billing/budget``, then the page again."""
        billing.set_budget(data.request())
        return Redirect("/console/billing#budget-title", status_code=303)

    @get("/report.csv", sync_to_thread=True, media_type="text/csv")
    def report(
        self,
        billing: NamedDependency[BillingService],
        month: Annotated[str, Parameter(pattern=MONTH, description="YYYY-MM")],
    ) -> Response[str]:
        """``GET /billing/report?month=...`` as CSV (one row per job and price)."""
        headers = {"Content-Disposition": f'attachment; filename="tune-billing-{month}.csv"'}
        return Response(billing.report_csv(month), media_type="text/csv; charset=utf-8", headers=headers)
