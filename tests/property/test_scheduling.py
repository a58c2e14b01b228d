"""``domain.scheduling``: the fair order across users and the launch budget rule, on random queues."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from domain.scheduling import check_launch_budget, fair_order

USERS = ["u0", "u1", "u2", "u3"]

queues = st.lists(st.sampled_from(USERS), max_size=30).map(
    lambda users: [(u, n) for n, u in enumerate(users)]
)
running = st.dictionaries(st.sampled_from(USERS), st.integers(0, 4))
quotas = st.dictionaries(st.sampled_from(USERS), st.none() | st.integers(0, 5))
served = st.dictionaries(st.sampled_from(USERS), st.integers(0, 50))


def plan(queue, run, quota, slots, last=None):
    return fair_order(
        queue, lambda job: job[0], running=run, quota=lambda u: quota.get(u), slots=slots, served=last
    )


def under_quota(user: str, taken: int, quota: dict) -> bool:
    return quota.get(user) is None or taken < quota[user]


@given(queues, running, quotas, st.integers(0, 10), served)
def test_a_plan_fills_at_most_the_free_slots_never_past_a_quota_each_user_in_queue_order(
    queue, run, quota, slots, last
) -> None:
    picked = plan(queue, run, quota, slots, last)
    assert len(picked) <= slots and len(set(picked)) == len(picked) and set(picked) <= set(queue)
    per_user = Counter(user for user, _ in picked)
    for user, count in per_user.items():
        limit = quota.get(user)
        assert limit is None or run.get(user, 0) + count <= max(limit, run.get(user, 0))
        mine = [job for job in queue if job[0] == user]
        assert [job for job in picked if job[0] == user] == mine[:count]  # the user's oldest first


@given(queues, running, quotas, st.integers(0, 10), served)
def test_a_slot_is_left_free_only_when_every_user_still_waiting_is_at_their_quota(
    queue, run, quota, slots, last
) -> None:
    picked = plan(queue, run, quota, slots, last)
    if len(picked) < slots:
        taken = Counter(run) + Counter(user for user, _ in picked)
        for user, _ in set(queue) - set(picked):
            assert not under_quota(user, taken[user], quota)


@given(queues, running, quotas, st.integers(0, 10), served)
def test_no_user_is_served_twice_while_another_with_fewer_running_waits(
    queue, run, quota, slots, last
) -> None:
    picked = plan(queue, run, quota, slots, last)
    taken = Counter(run) + Counter(user for user, _ in picked)
    left = {user for user, _ in set(queue) - set(picked) if under_quota(user, taken[user], quota)}
    for user in {user for user, _ in picked}:
        for other in left:
            # the last pick of ``user`` was made while ``other`` had at least as many running
            assert taken[user] - 1 <= taken[other]


@given(st.integers(1, 100), st.integers(0, 10))
def test_one_user_s_long_queue_gets_one_slot_while_others_wait(backlog: int, others: int) -> None:
    queue = [("u0", n) for n in range(backlog)] + [(f"v{n}", backlog + n) for n in range(others)]
    picked = fair_order(queue, lambda job: job[0], running={}, quota=lambda u: None, slots=others + 1)
    assert Counter(user for user, _ in picked)["u0"] == 1


@given(st.lists(st.sampled_from(USERS), min_size=1, max_size=30))
def test_users_with_as_many_running_take_turns(users: list[str]) -> None:
    """One slot at a time (each job ends before the next starts): between two turns of a user, every
    other user who had a job waiting all along had a turn."""
    queue = [(u, n) for n, u in enumerate(users)]
    last: dict[str, int] = {}
    turns: list[tuple[str, set[str]]] = []  # who was picked, and who was waiting then
    for turn in range(len(queue)):
        waiting = {u for u, _ in queue}
        [job] = fair_order(queue, lambda j: j[0], running={}, quota=lambda u: None, slots=1, served=last)
        queue.remove(job)
        last[job[0]] = turn
        turns.append((job[0], waiting))
    for n, (user, waiting) in enumerate(turns):
        later = next((m for m in range(n + 1, len(turns)) if turns[m][0] == user), None)
        if later is None:
            continue
        between = {picked for picked, _ in turns[n + 1 : later]}
        assert waiting - {user} - {u for u in waiting if u not in turns[later][1]} <= between


@given(st.integers(0, 10**9), st.none() | st.integers(1, 10**9))
def test_a_job_launches_while_its_user_s_budget_is_not_spent(spent: int, limit: int | None) -> None:
    refusal = check_launch_budget(spent_usd_micros=spent, monthly_limit_usd_micros=limit)
    assert (refusal is None) == (limit is None or spent < limit)
    if refusal is not None:
        assert "budget" in refusal and "spent" in refusal
