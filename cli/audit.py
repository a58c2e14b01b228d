"""``tune admin audit`` and ``tune admin rebuild``: every partition's log against its stored views.

The work is ``projections.audit`` (hash chain check, replay from position 0,
view by view comparison, rewrite); this module picks the partitions and prints.
Partitions are the platform's and each registered user's, as the platform's
log says (not a listing of the bucket).
"""

from __future__ import annotations

from typing import Annotated, Any

from cyclopts import Parameter

from cli.admin import Store, open_runtime
from cli.context import JsonFlag

__all__ = ["audit", "rebuild"]

UserFlag = Annotated[str | None, Parameter(help="Only this user's partition (default: every partition).")]


def _partitions(rt: Any, user_id: str | None) -> list[str]:
    import msgspec

    from api import views
    from projections.partition import PLATFORM, user_partition
    from projections.replay import replay

    if user_id:
        return [user_partition(user_id)]
    platform = replay(rt.app(PLATFORM), PLATFORM)
    name = views.users()
    users = (
        msgspec.json.decode(platform.views.render(name))["users"] if name in platform.views.names() else []
    )
    return [PLATFORM, *(user_partition(u["user_id"]) for u in users)]


def audit(*, user_id: UserFlag = None, store: Store = Store(), json: JsonFlag = False) -> int:  # noqa: B008
    """Verify hash chains and compare stored views with a replay; exit 1 if anything differs."""
    import msgspec

    from cli.output import Column, print_json, print_table
    from projections.audit import audit_partition
    from projections.partition import PLATFORM

    rt = open_runtime(store)
    reports = [audit_partition(rt.bucket, p, rt.app, deep=p == PLATFORM) for p in _partitions(rt, user_id)]
    if json:
        print_json([msgspec.to_builtins(r) | {"ok": r.ok} for r in reports])
    else:
        for report in reports:
            chain = "chain ok" if report.chain.ok else f"CHAIN BROKEN: {_chain_problem(report.chain)}"
            state = "views ok" if report.ok else f"{len(report.differences)} view(s) differ"
            if report.replay_error:
                state = f"REPLAY FAILED: {report.replay_error}"
            print(f"{report.partition}: head {report.head}, {chain}, {state}")
            cols = ("name", "problem", "path", "stored_position", "replayed_position")
            print_table(report.differences, [Column(k) for k in cols], empty="")
        bad = sum(not r.ok for r in reports)
        print(
            f"audited {len(reports)} partition(s): " + (f"{bad} with problems" if bad else "all consistent")
        )
    return 0 if all(r.ok for r in reports) else 1


def _chain_problem(chain: Any) -> str:
    return f"{chain.problem} at commit {chain.first_bad_seq}: {chain.message}"


def rebuild(*, user_id: UserFlag = None, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Replay every partition from position 0 and rewrite the views that differ."""
    import msgspec

    from cli.output import Column, print_json, print_table
    from projections.audit import rebuild_partition
    from projections.partition import PLATFORM

    rt = open_runtime(store)
    reports = [rebuild_partition(rt.bucket, p, rt.app, deep=p == PLATFORM) for p in _partitions(rt, user_id)]
    if json:
        print_json([msgspec.to_builtins(r) for r in reports])
        return
    rows = [
        {
            "partition": r.partition,
            "head": r.head,
            "written": len(r.written),
            "deleted": len(r.deleted),
            "unchanged": r.unchanged,
        }
        for r in reports
    ]
    print_table(rows, [Column(k) for k in ("partition", "head", "written", "deleted", "unchanged")])
