"""``tune billing``, ``tune budget`` and ``tune cost``: money, read from the API's ledger views.

Amounts travel as integer micro-dollars (``*_usd_micros``) and are shown exactly.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter
from msgspec import to_builtins

from cli.context import Ctx, JsonFlag
from cli.errors import CliError
from cli.pages import AfterFlag, AllFlag

__all__ = ["billing_app", "budget_app", "cost", "dollars_to_micros", "print_month_rows"]

billing_app = App(
    name="billing",
    help="Current usage, history, pricing and reports.",
    default_parameter=Parameter(negative=()),
)
budget_app = App(
    name="budget", help="Set the monthly budget and its alerts.", default_parameter=Parameter(negative=())
)

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def dollars_to_micros(text: str, *, where: str) -> int:
    """``"100"``, ``"12.50"`` or ``"$1,000"`` dollars as exact micro-dollars (``domain.money.parse_usd``)."""
    from domain.errors import ValidationFailed
    from domain.money import parse_usd

    try:
        return parse_usd(text, where=where)
    except ValidationFailed as exc:
        raise CliError(exc.message, where=where) from exc


def cost(*, job_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """What one job has cost so far (charged, credited and net: what is paid), by month and GPU type."""
    from api.schemas import JobCostReport
    from cli.output import Column, print_json, print_record, print_table

    reply = ctx.client.get(f"/billing/job/{job_id}/cost", type=JobCostReport)
    if json:
        print_json(reply)
        return
    print_record(
        {
            "job_id": reply.job_id,
            "status": reply.status,
            "charged_usd_micros": reply.charged_usd_micros,
            "credited_usd_micros": reply.credited_usd_micros,
            "cost_usd_micros": reply.cost_usd_micros,
            "estimate_usd_micros": reply.estimate_usd_micros,
            "max_cost_usd_micros": reply.max_cost_usd_micros,
            "gpu": f"{reply.gpu_metrics.gpu_count}x {reply.gpu_metrics.gpu_type}"
            if reply.gpu_metrics.gpu_type
            else None,
            "gpu_ms": reply.gpu_metrics.gpu_ms,
        }
    )
    if reply.credits:
        cols = ("attempt", "reason", "gpu_ms", "at")
        print_table(reply.credits, [Column(k) for k in cols], title="credited GPU time")
    if len(reply.periods) > 1:
        print_table(reply.periods, [Column(k) for k in ("gpu_type", "gpu_seconds", "cost_usd_micros")])


def _print_period(period: Any, *, title: str) -> None:
    from cli.output import Column, print_record, print_table

    record = {"period": period.period, "total_cost_usd_micros": period.total_cost_usd_micros}
    if period.credited_usd_micros:
        record = {
            "period": period.period,
            "charged_usd_micros": period.charged_usd_micros,
            "credited_usd_micros": period.credited_usd_micros,
            "total_cost_usd_micros": period.total_cost_usd_micros,
        }
    print_record(record, title=title)
    gpus = [{"gpu_type": name, **to_builtins(u)} for name, u in period.usage_breakdown.items()]
    print_table(
        gpus,
        [Column(k) for k in ("gpu_type", "gpu_ms", "cost_per_hour_usd_micros", "total_cost_usd_micros")],
        title="by GPU type",
        empty="no GPU time",
    )
    credited = ("credited_usd_micros",) if period.credited_usd_micros else ()
    print_table(
        period.jobs,
        [Column(k) for k in ("job_id", "gpu_type", "gpu_seconds", *credited, "cost_usd_micros")],
        title="by job",
        empty="",
    )
    if period.serving:
        print_table(period.serving, [Column(k) for k in SERVING_COLUMNS], title="serving (chat completions)")


_SERVED = ("model", "base_model", "requests", "prompt_tokens", "completion_tokens", "engine_ms")
"""A model's chat completions at one price: what was served (the table's and the CSV's first columns)."""
SERVING_COLUMNS = (*_SERVED, "cost_usd_micros")
_SERVED_CSV = (*_SERVED, "prompt_usd_micros_per_mtok", "completion_usd_micros_per_mtok")
"""The serving columns of the CSV report (``projections.report``), after the job columns."""
_REPORT_COLUMNS = ("job_id", "gpu_type", "gpu_count", "gpu_ms", "usd_micros_per_hour", "cost_usd_micros")


def print_month_rows(rows: Any, serving: Any, *, credited: bool, serving_title: str) -> None:
    """A month report's rows, one per job and price (with ``credited_gpu_ms`` in a month with credits),
    then its chat completions, if any, per model and price."""
    from cli.output import Column, print_table

    cols = (*_REPORT_COLUMNS[:4], "credited_gpu_ms", *_REPORT_COLUMNS[4:]) if credited else _REPORT_COLUMNS
    print_table(rows, [Column(k) for k in cols], empty="no usage that month")
    if serving:
        print_table(serving, [Column(k) for k in SERVING_COLUMNS], title=serving_title)


@billing_app.default
def billing(
    *,
    history: Annotated[
        bool, Parameter(help="Every past month instead of the current one (as `billing history --all`).")
    ] = False,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Usage and cost of the current month, with the budget (--history: past months)."""
    from api.schemas import Billing, BillingHistory
    from cli.output import Column, print_json, print_record, print_table
    from cli.pages import fetch_rows

    if history:  # every month, paged through; --json: the reply's shape, as it always printed
        periods = fetch_rows(ctx.client, "/billing/history", BillingHistory, "periods", limit=0, every=True)
        if json:
            print_json(BillingHistory(periods=periods))
        else:
            _print_months(periods)
        return
    usage = ctx.client.get("/billing/usage", type=Billing)
    if json:
        print_json(usage)
        return
    _print_period(usage.current_period, title="this month")
    if usage.budget is not None:
        print_record(
            {
                "monthly_limit_usd_micros": usage.budget.monthly_limit_usd_micros,
                "remaining_usd_micros": usage.remaining_usd_micros,
                "alerts_at": ", ".join(f"{p}%" for p in usage.budget.thresholds_pct),
            },
            title="budget",
        )
    alerts = usage.alerts or usage.current_period.alerts
    print_table(
        alerts,
        [Column(k) for k in ("at", "scope", "threshold_pct", "spent_usd_micros", "limit_usd_micros")],
        title="alerts",
        empty="",
    )


@billing_app.command(name="history")
def history_pages(
    *,
    limit: Annotated[int, Parameter(help="Show at most this many months, newest first (1-100).")] = 12,
    every: AllFlag = False,
    after: AfterFlag = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Past months' usage and cost, newest first: the latest --limit months, or --all."""
    from api.schemas import BillingHistory
    from cli.output import print_json
    from cli.pages import fetch_rows

    periods = fetch_rows(
        ctx.client, "/billing/history", BillingHistory, "periods",
        limit=limit, every=every, after=after, noun="months",
    )  # fmt: skip
    if json:
        print_json(periods)
    else:
        _print_months(periods)


def _print_months(periods: list[Any]) -> None:
    from cli.output import Column, print_table

    rows = [
        {"period": p.period, "jobs": len(p.jobs), "total_cost_usd_micros": p.total_cost_usd_micros}
        for p in periods
    ]
    cols = [Column(k) for k in ("period", "jobs", "total_cost_usd_micros")]
    print_table(rows, cols, empty="no history yet")


def _next_change(price: Any) -> str | None:
    """When the price of a GPU type changes next (a scheduled entry after the one in force)."""
    later = [
        s.effective_at
        for s in price.schedule
        if s.effective_at and s.effective_at > (price.effective_at or "")
    ]
    return min(later) if later else None


@billing_app.command
def pricing(*, json: JsonFlag = False, ctx: Ctx) -> None:
    """Current price of each GPU type, per GPU-hour."""
    from api.schemas import Pricing
    from cli.output import Column, print_json, print_table

    reply = ctx.client.get("/billing/pricing", type=Pricing)
    if json:
        print_json(reply)
        return
    rows = [
        {
            "gpu_type": gpu,
            "usd_micros_per_hour": p.usd_micros_per_hour,
            "effective_at": p.effective_at,
            "next_change": _next_change(p),
        }
        for gpu, p in reply.prices.items()
    ]
    cols = [Column(k) for k in ("gpu_type", "usd_micros_per_hour", "effective_at", "next_change")]
    print_table(rows, cols, title=f"GPU pricing ({reply.currency})", empty="no prices set")
    if reply.serving:
        served = [{"base_model": name, **to_builtins(p)} for name, p in reply.serving.items()]
        keys = ("base_model", "prompt_usd_micros_per_mtok", "completion_usd_micros_per_mtok", "effective_at")
        print_table(served, [Column(k) for k in keys], title="serving, per million tokens")


@billing_app.command
def report(
    *,
    month: Annotated[str, Parameter(help="The month, YYYY-MM.")],
    format: Annotated[Literal["table", "csv", "json"], Parameter(help="Output format.")] = "table",
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """The monthly billing report, replayed from the ledger's events (one row per job and price)."""
    import csv

    import msgspec

    from api.schemas import MonthlyReport, ReportRow
    from cli.output import print_json, print_record, report_format

    format = report_format(format, json)  # type: ignore[assignment]
    if not _MONTH.fullmatch(month):
        raise CliError(f"month must look like 2026-03 (got {month!r})", where="--month")
    doc = ctx.client.get("/billing/report", params={"month": month}, type=MonthlyReport)
    if format == "json":
        print_json(doc)
    elif format == "csv":
        credits = ("charged_usd_micros", "credited_gpu_ms", "credited_usd_micros")
        fields = [f.name for f in msgspec.structs.fields(ReportRow)]
        if not doc.credited_usd_micros:  # no credits that month: the columns as they always were
            fields = [f for f in fields if f not in credits]
        serving = [f for f in _SERVED_CSV if doc.serving]  # the serving columns in a month with serving
        writer = csv.DictWriter(
            sys.stdout, fieldnames=[*fields, *serving], lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        for row in doc.rows:
            values = to_builtins(row)
            if not row.credited_gpu_ms:
                values.update(charged_usd_micros=row.cost_usd_micros, credited_gpu_ms=0)
                values.update(credited_usd_micros=0)
            writer.writerow(values)
        for served in doc.serving or ():
            writer.writerow(to_builtins(served))
    else:
        credited = bool(doc.credited_usd_micros)
        print_record(
            {
                "month": doc.month,
                **({"charged_usd_micros": doc.charged_usd_micros} if credited else {}),
                **({"credited_usd_micros": doc.credited_usd_micros} if credited else {}),
                "total_cost_usd_micros": doc.total_cost_usd_micros,
            },
            title="billing report",
        )
        print_month_rows(doc.rows, doc.serving, credited=credited, serving_title="serving (chat completions)")


@budget_app.command(name="set")
def set_budget(
    *,
    monthly: Annotated[str, Parameter(help="Monthly limit in dollars, e.g. 100 or 12.50.")],
    thresholds: Annotated[
        list[int] | None,
        Parameter(consume_multiple=True, help="Alert at these percentages (default 50 80 100)."),
    ] = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Set the monthly budget; jobs are stopped when it would be exceeded."""
    from api.schemas import BudgetRequest, BudgetView
    from cli.output import print_json, usd

    pcts = sorted(set(thresholds or [50, 80, 100]))
    if any(not 0 < p <= 100 for p in pcts):
        raise CliError("thresholds must be percentages between 1 and 100", where="--thresholds")
    body = BudgetRequest(
        monthly_limit_usd_micros=dollars_to_micros(monthly, where="--monthly"), thresholds_pct=pcts
    )
    reply = ctx.client.put("/billing/budget", body, type=BudgetView)
    if json:
        print_json(reply)
    else:
        alerts = ", ".join(f"{p}%" for p in body.thresholds_pct)
        print(f"monthly budget set to {usd(body.monthly_limit_usd_micros)}; alerts at {alerts}")


@budget_app.command
def show(*, json: JsonFlag = False, ctx: Ctx) -> None:
    """The monthly budget, what is spent and what remains."""
    from api.schemas import Billing
    from cli.output import print_json, print_record

    usage = ctx.client.get("/billing/usage", type=Billing)
    if usage.budget is None or usage.budget.monthly_limit_usd_micros is None:
        print("no budget set (tune budget set --monthly 100)")
        return
    view = {
        "monthly_limit_usd_micros": usage.budget.monthly_limit_usd_micros,
        "spent_usd_micros": usage.current_period.total_cost_usd_micros,
        "remaining_usd_micros": usage.remaining_usd_micros,
        "thresholds_pct": usage.budget.thresholds_pct,
        "set_at": usage.budget.set_at,
    }
    print_json(view) if json else print_record(view, title=f"budget {usage.current_period.period}")


@budget_app.command
def clear(*, ctx: Ctx) -> None:
    """Remove the monthly budget (no alerts, no budget stops)."""
    from api.schemas import BudgetRequest, BudgetView

    ctx.client.put("/billing/budget", BudgetRequest(monthly_limit_usd_micros=None), type=BudgetView)
    print("monthly budget removed")
