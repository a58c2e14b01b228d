"""Operator entry point: ``python -m projections rebuild|audit|report --bucket URL [--user ID]``.

``audit``    verify each partition's hash chain, replay it, list every view that differs
             from the replay; exit 1 if anything is wrong.
``rebuild``  replay from position 0 and write the views that differ; remove stray views. A
             partition whose log is broken is named (every problem) and left untouched; exit 1.
``report``   a user's monthly billing report (``--month 2024-03``), CSV or JSON, replayed.

``tune admin`` wraps these (``main(argv)`` returns the exit status).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from projections.audit import AuditReport, RebuildReport, audit_bucket, problem_lines, rebuild_bucket
from projections.replay import apps_on, read_events
from projections.report import monthly_reports, report_csv, report_json
from storage import open_bucket
from storage.layout import user_partition

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m projections", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("audit", "compare stored views with a replay"), ("rebuild", "rewrite views from 0")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--bucket", required=True, help="file:///abs/path or gs://bucket[/prefix]")
        sub.add_argument("--user", help="only this user's partition (and their copies of platform views)")
        sub.add_argument("--deep", action="store_true", help="also look for stray views of unknown users")
        sub.add_argument("--json", action="store_true", help="print the reports as JSON")
    sub = commands.add_parser("report", help="a user's monthly billing report")
    sub.add_argument("--bucket", required=True)
    sub.add_argument("--user", required=True)
    sub.add_argument("--month", required=True, help="YYYY-MM")
    sub.add_argument("--format", choices=("csv", "json"), default="csv")
    return parser


def _print_audit(report: AuditReport) -> None:
    chain = report.chain
    verdict = "chain ok" if chain.ok else f"CHAIN BROKEN ({len(chain.problems)} problem(s))"
    print(f"{report.partition}: {verdict} ({chain.message}); head {report.head}")
    for line in problem_lines(report):  # every problem, as `tune admin audit` prints them
        print(f"  {line}")
    for d in report.differences:
        where = f" at {d.path}" if d.path else ""
        positions = f"stored position {d.stored_position}, replayed {d.replayed_position}"
        print(f"  {d.problem:<10} {d.name}{where} ({positions})")
    if report.ok:
        print("  views ok")


def _print_rebuild(report: RebuildReport) -> None:
    if not report.ok:
        print(f"{report.partition}: NOT REBUILT (a broken log: its views were left untouched)")
        for line in problem_lines(report):
            print(f"  {line}")
        return
    print(
        f"{report.partition}: head {report.head}, {len(report.written)} written, "
        f"{len(report.deleted)} removed, {report.unchanged} unchanged"
    )
    for name in report.written:
        print(f"  wrote   {name}")
    for name in report.deleted:
        print(f"  removed {name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bucket = open_bucket(args.bucket)
    if args.command == "report":
        partition = user_partition(args.user)
        events = (event for _, event in read_events(apps_on(bucket)(partition)))
        rows, serving = monthly_reports(events, args.month)
        out = (
            report_csv(rows, serving)
            if args.format == "csv"
            else report_json(rows, args.month, serving).decode() + "\n"
        )
        sys.stdout.write(out)
        return 0
    work, show = (audit_bucket, _print_audit) if args.command == "audit" else (rebuild_bucket, _print_rebuild)
    reports = work(bucket, user=args.user, deep=args.deep)
    if args.json:
        print(msgspec.json.encode([msgspec.structs.asdict(r) | {"ok": r.ok} for r in reports]).decode())
    else:
        for report in reports:
            show(report)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
