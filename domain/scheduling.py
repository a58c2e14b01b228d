"""Which waiting jobs a dispatcher launches next, and whether one may launch at all (pure).

``fair_order`` is the order across users: not a global FIFO (one user's 100 queued jobs would hold
every slot until they are all done) but the least-served user first, each time a slot is filled:

1. the users with a job waiting and fewer jobs running than their concurrent-job quota compete;
2. the one with the fewest jobs running (those picked in this round counted) wins; among equals,
   the one served longest ago (never served first), then the one whose first waiting job is
   earliest in the queue;
3. that user's first waiting job is picked; repeat while slots are free.

So each user with work waiting gets a slot before anyone gets another, and users with as many
running take turns (round robin, oldest waiting job first); a user's own jobs keep their queue
order, and a user at their quota waits without holding up the others. The queue's order is the
dispatcher's: a retried job goes back at its head.

``check_launch_budget``: a job does not launch once its user's monthly budget is spent (the
ledger would stop it at its first heartbeat: ``domain.budget.would_exceed``). A job admitted with
``force``, or queued while the user's other jobs spent the rest, ends ``stopped`` with the
ledger's own reason, ``budget_exceeded``, instead of starting.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from domain.money import format_usd

__all__ = ["BUDGET_SPENT", "check_launch_budget", "fair_order"]

BUDGET_SPENT = "budget_exceeded"
"""The stop reason of a job that did not launch because its user's budget is spent (the ledger's)."""

J = TypeVar("J")
U = TypeVar("U", bound=Hashable)


def fair_order(
    waiting: Sequence[J],
    user_of: Callable[[J], U],
    *,
    running: Mapping[U, int],
    quota: Callable[[U], int | None],
    slots: int,
    served: Mapping[U, int] | None = None,
) -> list[J]:
    """The jobs of ``waiting`` (in queue order) to launch into ``slots`` free slots, in launch order
    (see the module docstring). ``running``: jobs running per user; ``quota``: a user's most jobs
    at once (None: no limit); ``served``: when each user was last served (larger: later; a user
    missing was never served)."""
    queues: dict[U, list[J]] = {}
    for job in waiting:
        queues.setdefault(user_of(job), []).append(job)  # users in order of their first waiting job
    taken = {user: running.get(user, 0) for user in queues}
    limits = {user: quota(user) for user in queues}
    rank = {user: n for n, user in enumerate(queues)}
    last = {user: (served or {}).get(user, -1) for user in queues}
    turn = max(last.values(), default=-1)
    picked: list[J] = []
    while len(picked) < slots:
        eligible = [
            user
            for user, jobs in queues.items()
            if jobs and (limits[user] is None or taken[user] < limits[user])  # type: ignore[operator]
        ]
        if not eligible:
            break
        user = min(eligible, key=lambda u: (taken[u], last[u], rank[u]))
        picked.append(queues[user].pop(0))
        taken[user] += 1
        turn += 1
        last[user] = turn
    return picked


def check_launch_budget(*, spent_usd_micros: int, monthly_limit_usd_micros: int | None) -> str | None:
    """Why a job may not launch now for its user's monthly budget (None: it may)."""
    if monthly_limit_usd_micros is None or spent_usd_micros < monthly_limit_usd_micros:
        return None
    return (
        f"this month's budget ({format_usd(monthly_limit_usd_micros)}) is spent "
        f"({format_usd(spent_usd_micros)}): the job was not started; raise the budget and submit it again"
    )
