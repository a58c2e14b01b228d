"""``tune admin audit | rebuild | report``: the logs in the bucket against their views, and reports.

The work is ``projections`` (``audit_bucket``: hash chains, replay from position 0,
view-by-view comparison; ``rebuild_bucket``: rewrite from the replay;
``monthly_report``: a user's month replayed); this module only prints.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from cyclopts import Parameter

from cli.admin import Store, open_runtime
from cli.context import JsonFlag

__all__ = ["audit", "rebuild", "report"]

UserFlag = Annotated[
    str | None, Parameter(help="Only this user's partition and their copies of platform views.")
]
DeepFlag = Annotated[bool, Parameter(help="Also look for stray views of users the log never registered.")]


def _chain(report: Any) -> str:
    problems = len(report.chain.problems)
    return "chain ok" if report.chain.ok else f"CHAIN BROKEN ({problems} problem(s))"


def audit(
    *,
    user_id: UserFlag = None,
    month: Annotated[
        str | None, Parameter(help="Also recompute this month's bill (YYYY-MM) and compare it.")
    ] = None,
    deep: DeepFlag = False,
    workers: Annotated[
        int | None,
        Parameter(help="Audit user partitions in up to this many processes (default: the CPUs, at most 8)."),
    ] = None,
    store: Store = Store(),  # noqa: B008 - cyclopts reads the defaults
    json: JsonFlag = False,
) -> int:
    """Verify hash chains, compare stored views with a replay and recompute metered usage from the raw
    heartbeat archive (signatures verified with this home's heartbeat key); exit 1 if anything differs."""
    import msgspec

    from cli.output import Column, print_json, print_table
    from projections.audit import audit_bucket, problem_lines

    rt = open_runtime(store)
    reports = audit_bucket(  # each partition on a fresh Application, released before the next
        rt.bucket, user=user_id, deep=deep, heartbeat_key=_heartbeat_key(rt), workers=workers
    )
    months = _check_months(rt, reports, month, workers) if month else []
    if json:
        print_json(
            [msgspec.to_builtins(r) | {"ok": r.ok} for r in reports]
            + [msgspec.to_builtins(m) | {"ok": m.ok} for m in months]
        )
    else:
        for report in reports:
            state = "views ok" if not report.differences else f"{len(report.differences)} view(s) differ"
            if report.replay_error:
                state = f"REPLAY FAILED: {report.replay_error}"
            for line in problem_lines(report, replay=False):  # a failed replay: in `state`
                print(line)
            print(f"{report.partition}: head {report.head}, {_chain(report)}, {state}")
            if not report.witness.startswith("unwitnessed"):
                print(f"{report.partition}: {report.witness}")
            cols = ("name", "problem", "path", "stored_position", "replayed_position")
            print_table(report.differences, [Column(k) for k in cols], empty="")
            for r in report.rejected_heartbeats:  # findings: the ledger refused to bill these
                print(
                    f"{report.partition}: job {r.job_id} attempt {r.attempt}: {r.count} heartbeat(s) "
                    f"(seq {r.first_seq}-{r.last_seq}) rejected, unbilled: {r.reason} (at {r.at})"
                )
            for line in _metering_lines(report):
                print(line)
        for m in months:
            billed = "no bill" if m.billed_usd_micros is None else f"{m.billed_usd_micros} usd micros billed"
            verdict = "ok" if m.ok else "DIFFERS"
            print(
                f"{m.partition} {m.month}: {m.replayed_usd_micros} usd micros replayed, {billed}: {verdict}"
            )
        if reports and all(r.witness.startswith("unwitnessed") for r in reports):
            print("heads unwitnessed (no TUNE_WITNESS): a rolled back log shows only against position.json")
        bad = sum(not r.ok for r in reports) + sum(not m.ok for m in months)
        print(
            f"audited {len(reports)} partition(s): " + (f"{bad} with problems" if bad else "all consistent")
        )
    return 0 if all(r.ok for r in reports) and all(m.ok for m in months) else 1


def _heartbeat_key(rt: Any) -> bytes | None:
    """The platform's heartbeat key if this home has one (never made here: without one, signatures
    are not checked)."""
    from runtime.settings import HEARTBEAT_KEY_FILE

    if rt.settings.heartbeat_key:
        return rt.settings.heartbeat_key.encode()  # type: ignore[no-any-return]
    path = rt.settings.home / HEARTBEAT_KEY_FILE
    return path.read_text().strip().encode() if path.is_file() else None


def _metering_lines(report: Any) -> list[str]:
    """One line per metering difference, and the archive's summary (``projections.metering_audit``)."""
    metering = report.metering
    if metering is None:
        return []
    lines = [
        f"{report.partition}: METERING {d.problem}: job {d.job_id} attempt {d.attempt} seqs "
        f"{d.first_seq}-{d.last_seq}: {d.detail}"
        for d in metering.differences
    ]
    summary = f"{report.partition}: metering: {metering.archives} archive(s) recomputed"
    if metering.not_archived:
        summary += f", {metering.not_archived} usage event(s) not archived (metered before the archive)"
    return [
        *lines,
        summary + (", all consistent" if metering.ok else f", {len(metering.differences)} difference(s)"),
    ]


def _check_months(rt: Any, reports: list[Any], month: str, workers: int | None) -> list[Any]:
    """Each audited user's ``month`` replayed from their events against their billing views (one
    user's log held at a time, in ``workers`` processes as the audit)."""
    import functools

    from cli.admin import domain_errors
    from domain.money import check_period
    from projections.pool import map_partitions
    from projections.report import check_replayed_month
    from storage.layout import USERS

    with domain_errors():
        check_period(month)
        partitions = [r.partition for r in reports if r.partition.startswith(USERS)]
        work = functools.partial(check_replayed_month, month=month)
        return map_partitions(work, rt.bucket, partitions, workers=workers)


def rebuild(
    *,
    user_id: UserFlag = None,
    deep: DeepFlag = False,
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> int:
    """Replay every partition from position 0 and rewrite the views that differ; exit 1 if a partition's
    log is broken (one line per problem; its views are left untouched, the others are rebuilt)."""
    import msgspec

    from cli.output import Column, print_json, print_table
    from projections.audit import problem_lines, rebuild_bucket

    rt = open_runtime(store)
    reports = rebuild_bucket(rt.bucket, user=user_id, deep=deep)  # one partition held at a time
    status = 0 if all(r.ok for r in reports) else 1
    if json:
        print_json([msgspec.to_builtins(r) | {"ok": r.ok} for r in reports])
        return status
    rows = [
        {
            "partition": r.partition,
            "head": r.head,
            "written": len(r.written),
            "removed": len(r.deleted),
            "unchanged": r.unchanged,
        }
        for r in reports
        if r.ok
    ]
    print_table(rows, [Column(k) for k in ("partition", "head", "written", "removed", "unchanged")], empty="")
    broken = [r for r in reports if not r.ok]
    for r in broken:
        for line in problem_lines(r):
            print(line, file=sys.stderr)
    if broken:
        print(
            f"rebuilt {len(reports) - len(broken)} partition(s); {len(broken)} not rebuilt "
            f"(a broken log: their views were left untouched): {', '.join(r.partition for r in broken)}"
        )
    return status


def report(
    *,
    user_id: str,
    month: Annotated[str, Parameter(help="The month, YYYY-MM.")],
    format: Literal["table", "csv", "json"] = "table",
    json: JsonFlag = False,
    store: Store = Store(),  # noqa: B008
) -> None:
    """A user's monthly billing report, replayed from their events."""
    from cli.admin import domain_errors
    from cli.billing import print_month_rows
    from cli.output import print_record, report_format
    from projections.replay import read_events
    from projections.report import monthly_reports, report_csv, report_document, report_json
    from storage.layout import user_partition

    format = report_format(format, json)  # type: ignore[assignment]
    rt = open_runtime(store)
    with domain_errors():
        events = (event for _, event in read_events(rt.app(user_partition(user_id))))
        rows, serving = monthly_reports(events, month)
    if format == "csv":
        sys.stdout.write(report_csv(rows, serving))
    elif format == "json":
        sys.stdout.write(report_json(rows, month, serving).decode() + "\n")
    else:
        doc = report_document(rows, month, serving)
        totals = {
            "charged_usd_micros": doc.charged_usd_micros,
            "credited_usd_micros": doc.credited_usd_micros,
        }
        shown = {k: v for k, v in totals.items() if v is not None}
        print_record(
            {"month": doc.month, **shown, "total_cost_usd_micros": doc.total_cost_usd_micros}, title=user_id
        )
        print_month_rows(doc.rows, doc.serving, credited=bool(shown), serving_title="serving")
