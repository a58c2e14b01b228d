"""``/billing``: usage this month, history, prices, a job's cost, the monthly budget."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from api.deps import PathId
from api.errors import documented
from api.schemas import (
    Billing,
    BillingHistory,
    BudgetRequest,
    BudgetView,
    JobCostReport,
    MonthlyReport,
    Pricing,
)
from api.services import BillingService, JobService
from api.services.pages import DEFAULT_LIMIT, MAX_LIMIT
from runtime.context import Runtime


class BillingController(Controller):
    path = "/billing"
    tags = ["billing"]

    @get("/usage", operation_id="billing_usage", responses=documented())
    async def usage(
        self, billing: NamedDependency[BillingService], runtime: NamedDependency[Runtime]
    ) -> Billing:
        """This month's usage and cost per GPU type and per job, with the budget and what remains."""
        return await runtime.io(billing.usage)

    @get("/history", operation_id="billing_history", responses=documented())
    async def history(
        self,
        billing: NamedDependency[BillingService],
        runtime: NamedDependency[Runtime],
        limit: Annotated[
            int | None,
            Parameter(
                ge=1,
                le=MAX_LIMIT,
                description=f"a page of at most this many months (default {DEFAULT_LIMIT} with "
                "``after``); without ``limit`` and ``after``, every closed month",
            ),
        ] = None,
        after: Annotated[
            str | None,
            Parameter(
                max_length=200, description="the ``next`` cursor of the previous page: the months after it"
            ),
        ] = None,
    ) -> BillingHistory:
        """Closed months, newest first: a page with ``limit`` / ``after`` (``has_more``, ``next``), all
        of them without."""
        return await runtime.io(billing.history, limit, after)

    @get("/pricing", operation_id="billing_pricing", responses=documented())
    async def pricing(
        self, billing: NamedDependency[BillingService], runtime: NamedDependency[Runtime]
    ) -> Pricing:
        """The price of a GPU-hour per GPU type."""
        return await runtime.io(billing.pricing)

    @get("/job/{job_id:str}/cost", operation_id="job_cost", responses=documented(404))
    async def job_cost(
        self, job_id: PathId, jobs: NamedDependency[JobService], runtime: NamedDependency[Runtime]
    ) -> JobCostReport:
        """What one job has cost so far, and in which months."""
        return await runtime.io(jobs.cost, job_id)

    @get("/report", operation_id="billing_report", responses=documented(), sync_to_thread=True)
    def report(
        self,
        billing: NamedDependency[BillingService],
        month: Annotated[str, Parameter(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
    ) -> MonthlyReport:
        """The month's usage per job and price, replayed from the user's events (exact, auditable)."""
        return billing.report(month)

    @put("/budget", operation_id="set_budget", responses=documented(), sync_to_thread=True)
    def set_budget(
        self, data: JSONBody[BudgetRequest], billing: NamedDependency[BillingService]
    ) -> BudgetView:
        """Set the monthly budget and alert thresholds; jobs stop when it would be exceeded."""
        return billing.set_budget(data)
