"""``tune billing``, ``tune budget`` and ``tune cost``: money, read from the API's ledger views.

Amounts travel as integer micro-dollars (``*_usd_micros``) and are shown exactly.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter

from cli.context import Ctx, JsonFlag
from cli.errors import CliError

__all__ = ["billing_app", "budget_app", "cost", "dollars_to_micros"]

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
    """``"100"`` or ``"12.50"`` dollars as exact integer micro-dollars (no floats)."""
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation as exc:
        raise CliError(f"not an amount of dollars: {text!r}", where=where) from exc
    micros = value * 1_000_000
    if not value.is_finite() or value < 0 or micros != micros.to_integral_value():
        raise CliError(f"amount must be >= 0 with at most 6 decimals: {text!r}", where=where)
    return int(micros)


def cost(*, job_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """What one job has cost so far, by GPU type and price."""
    from cli.output import print_document, print_json

    reply = ctx.client.get(f"/billing/job/{job_id}/cost")
    print_json(reply) if json else print_document(reply, title=f"cost of {job_id}")


@billing_app.default
def billing(
    *,
    history: Annotated[bool, Parameter(help="Past periods instead of the current one.")] = False,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Usage and cost of the current period (--history: past periods)."""
    from cli.output import print_document, print_json

    reply = ctx.client.get("/billing/history" if history else "/billing/usage")
    print_json(reply) if json else print_document(reply, title="billing history" if history else "usage")


@billing_app.command
def pricing(*, json: JsonFlag = False, ctx: Ctx) -> None:
    """Current GPU prices."""
    from cli.output import print_document, print_json

    reply = ctx.client.get("/billing/pricing")
    print_json(reply) if json else print_document(reply, title="GPU pricing")


def _report_rows(reply: Any) -> list[dict[str, Any]]:
    """The report's line items: its first list of objects."""
    if isinstance(reply, list):
        return reply
    for value in reply.values():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
    return [reply]


@billing_app.command
def report(
    *,
    month: Annotated[str, Parameter(help="The month, YYYY-MM.")],
    format: Annotated[Literal["table", "csv", "json"], Parameter(help="Output format.")] = "table",
    ctx: Ctx,
) -> None:
    """The monthly billing report, replayed from the ledger's events."""
    import csv

    from cli.output import print_document, print_json, to_plain

    if not _MONTH.fullmatch(month):
        raise CliError(f"month must look like 2026-03 (got {month!r})", where="--month")
    reply = to_plain(ctx.client.get("/billing/report", params={"month": month}))
    if format == "json":
        print_json(reply)
    elif format == "csv":
        rows = _report_rows(reply)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(sys.stdout, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print_document(reply, title=f"billing report {month}")


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
    from cli.output import print_json, usd

    pcts = thresholds or [50, 80, 100]
    if any(not 0 < p <= 100 for p in pcts):
        raise CliError("thresholds must be percentages between 1 and 100", where="--thresholds")
    body = {
        "monthly_limit_usd_micros": dollars_to_micros(monthly, where="--monthly"),
        "thresholds_pct": sorted(set(pcts)),
    }
    reply = ctx.client.put("/billing/budget", body)
    if json:
        print_json(reply)
    else:
        print(
            f"monthly budget set to {usd(body['monthly_limit_usd_micros'])}; "
            f"alerts at {', '.join(f'{p}%' for p in body['thresholds_pct'])}"
        )
