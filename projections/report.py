"""Monthly billing report: one row per job and price group, replayed from a user's events.

The rows come from the same fold as ``billing.json`` (``projections.billing``),
so a report and the billing view can never disagree; exported as CSV or JSON. ``cost`` is
net (what is paid); a row with credits also has ``charged_usd_micros``, ``credited_gpu_ms`` and
``credited_usd_micros`` (and the CSV those columns when the month has any credit, so the reports
of months without credits are as before).

Chat completions (serving) come as rows of their own (``ServingReportRow``, per model and price,
from the same fold): in the document's ``serving`` and, in the CSV, after the job rows with the
serving columns (``model`` ... ``completion_usd_micros_per_mtok``) added; both only in a month with
serving, so other months' reports are as before. The total counts both.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from domain.money import check_period, dollars
from projections import billing
from projections.render import encode, seconds
from storage import Bucket, ObjectNotFound, layout

__all__ = [
    "MonthCheck",
    "MonthlyReport",
    "ReportRow",
    "ServingReportRow",
    "check_month",
    "check_replayed_month",
    "monthly_report",
    "monthly_reports",
    "report_csv",
    "report_document",
    "report_json",
]


class ReportRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One job's usage at one price in the month; ``seconds`` is wall time on its ``gpu_count`` GPUs
    (metered), ``cost`` net."""

    job_id: str
    gpu_type: str
    gpu_count: int
    seconds: Decimal
    cost_per_hour: Decimal
    cost: Decimal
    gpu_ms: int
    usd_micros_per_hour: int
    cost_usd_micros: int
    charged_usd_micros: int | None = None
    credited_gpu_ms: int | None = None
    credited_usd_micros: int | None = None


_CREDIT_COLUMNS = ("charged_usd_micros", "credited_gpu_ms", "credited_usd_micros")


class ServingReportRow(msgspec.Struct, frozen=True):
    """Chat completions of one model at one price in the month (tokens summed, priced once)."""

    model: str
    base_model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    engine_ms: int
    prompt_usd_micros_per_mtok: int
    completion_usd_micros_per_mtok: int
    cost: Decimal
    cost_usd_micros: int


_SERVING_COLUMNS = tuple(
    f for f in ServingReportRow.__struct_fields__ if f not in ("cost", "cost_usd_micros")
)


class MonthlyReport(msgspec.Struct, frozen=True, omit_defaults=True):
    month: str
    start_date: str
    rows: list[ReportRow]
    total_cost: Decimal
    total_cost_usd_micros: int
    charged_usd_micros: int | None = None
    credited_usd_micros: int | None = None
    serving: list[ServingReportRow] | None = None


def monthly_report(events: Iterable[Any], month: str) -> list[ReportRow]:
    """Rows of ``month`` (``"2024-03"``), by job id then GPU type, GPU count and price."""
    return monthly_reports(events, month)[0]


def monthly_reports(events: Iterable[Any], month: str) -> tuple[list[ReportRow], list[ServingReportRow]]:
    """The job rows (``monthly_report``) and the serving rows of ``month``, from one fold."""
    check_period(month)
    state = billing.BillingState()
    for event in events:
        state = billing.fold(state, event)
    period = state.periods.get(month)
    if period is None:
        return [], []
    serving = [
        ServingReportRow(
            g.model,
            g.base_model,
            g.requests,
            g.prompt_tokens,
            g.completion_tokens,
            g.engine_ms,
            g.prompt_usd_micros_per_mtok,
            g.completion_usd_micros_per_mtok,
            dollars(g.cost_usd_micros),
            g.cost_usd_micros,
        )
        for g in period.serving
    ]
    return _job_rows(period), serving


def _job_rows(period: billing.PeriodState) -> list[ReportRow]:
    rows = []
    for job_id, groups in sorted(period.jobs.items()):
        for group in sorted(groups, key=lambda g: g.key):
            rows.append(
                ReportRow(
                    job_id=job_id,
                    gpu_type=group.gpu_type,
                    gpu_count=group.gpu_count,
                    seconds=seconds(group.gpu_ms),
                    cost_per_hour=dollars(group.usd_micros_per_hour),
                    cost=dollars(group.cost_usd_micros),
                    gpu_ms=group.gpu_ms,
                    usd_micros_per_hour=group.usd_micros_per_hour,
                    cost_usd_micros=group.cost_usd_micros,
                    **(
                        {
                            "charged_usd_micros": group.charged_usd_micros,
                            "credited_gpu_ms": group.credited_ms,
                            "credited_usd_micros": group.credited_usd_micros,
                        }
                        if group.credited_ms
                        else {}
                    ),
                )
            )
    return rows


def report_document(
    rows: list[ReportRow], month: str, serving: Sequence[ServingReportRow] = ()
) -> MonthlyReport:
    """The rows with their month and exact total (what the API returns)."""
    served = sum(row.cost_usd_micros for row in serving)
    total = sum(row.cost_usd_micros for row in rows) + served
    credited = sum(row.credited_usd_micros or 0 for row in rows)
    extra: dict[str, Any] = {"serving": list(serving)} if serving else {}
    if not any(row.credited_gpu_ms for row in rows):
        return MonthlyReport(month, f"{month}-01", rows, dollars(total), total, **extra)
    return MonthlyReport(
        month, f"{month}-01", rows, dollars(total), total, total + credited, credited, **extra
    )


def report_json(rows: list[ReportRow], month: str, serving: Sequence[ServingReportRow] = ()) -> bytes:
    return encode(report_document(rows, month, serving))


def report_csv(rows: list[ReportRow], serving: Sequence[ServingReportRow] = ()) -> str:
    """CSV with a header row; amounts as exact decimals (the credit columns only if a row has credits,
    then 0 in the rows without; the serving columns only if the month has serving, then empty in the
    job rows, and the job columns empty in the serving rows but ``cost`` and ``cost_usd_micros``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = ReportRow.__struct_fields__
    if not any(row.credited_gpu_ms for row in rows):
        fields = tuple(f for f in fields if f not in _CREDIT_COLUMNS)
    writer.writerow((*fields, *_SERVING_COLUMNS) if serving else fields)
    for row in rows:
        writer.writerow(
            [_cell(row, field) for field in fields] + ([""] * len(_SERVING_COLUMNS) if serving else [])
        )
    for served in serving:
        job_cells = [getattr(served, f) if f in ("cost", "cost_usd_micros") else "" for f in fields]
        writer.writerow(job_cells + [getattr(served, f) for f in _SERVING_COLUMNS])
    return out.getvalue()


def _cell(row: ReportRow, field: str) -> Any:
    value = getattr(row, field)
    if value is None and field in _CREDIT_COLUMNS:
        return row.cost_usd_micros if field == "charged_usd_micros" else 0
    return value


class MonthCheck(msgspec.Struct, frozen=True):
    """A month's total replayed from the events against the one the billing views show."""

    partition: str
    month: str
    replayed_usd_micros: int
    billed_usd_micros: int | None  # None: no billing view holds that month

    @property
    def ok(self) -> bool:
        return self.replayed_usd_micros == (self.billed_usd_micros or 0)


def check_month(bucket: Bucket, partition: str, events: Iterable[Any], month: str) -> MonthCheck:
    """Recompute ``month`` from ``events`` and compare it with ``billing.json`` / ``billing_history.json``."""
    rows, serving = monthly_reports(events, month)
    replayed = report_document(rows, month, serving).total_cost_usd_micros
    return MonthCheck(partition, month, replayed, _billed(bucket, partition, month))


def check_replayed_month(bucket: Bucket, partition: str, open_app: Any, *, month: str) -> MonthCheck:
    """``check_month`` of the partition's events, read from ``open_app(partition)``: the shape
    ``projections.pool.map_partitions`` works with."""
    from projections.replay import read_events

    return check_month(bucket, partition, (event for _, event in read_events(open_app(partition))), month)


def _billed(bucket: Bucket, partition: str, month: str) -> int | None:
    views = (
        (layout.billing(layout.user_of(partition)), billing.BillingView),
        (layout.billing_history(layout.user_of(partition)), billing.HistoryView),
    )
    for name, kind in views:
        try:
            view = msgspec.json.decode(bucket.read(name), type=kind)
        except ObjectNotFound:
            continue
        periods = [view.current_period] if isinstance(view, billing.BillingView) else view.periods
        for period in periods:
            if period is not None and period.period == month:
                return period.total_cost_usd_micros
    return None
