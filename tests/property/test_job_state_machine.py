"""Random command sequences never put a job in an invalid state, and refusals change nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.errors import PlatformError
from domain.job import ACTIVE_STATES, TERMINAL_STATES, TRANSITIONS, Job, JobState
from tests.jobs import new_job

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# Attempts are drawn relative to the job's current one (mostly valid, sometimes stale or ahead),
# and ending commands are drawn less often, so runs reach every state, not just "stopped".
DELTAS = st.sampled_from([0, 0, 0, 1, 1, -1, 2])
NUMBERS = st.integers(min_value=0, max_value=40)
WEIGHTS = {
    "queue": 2, "start": 3, "report_progress": 2, "save_checkpoint": 1, "meter_usage": 3, "raise_alert": 1,
    "retry": 2, "mark_lost": 1, "request_stop": 1, "mark_stopped": 1, "mark_succeeded": 1, "mark_failed": 1,
}  # fmt: skip
NAMES = st.sampled_from([name for name, weight in WEIGHTS.items() for _ in range(weight)])
NO_CAP = {"max_cost_usd_micros": None, "estimate_usd_micros": None}
COMMANDS = st.tuples(NAMES, DELTAS, NUMBERS, NUMBERS, st.integers(min_value=0, max_value=10**7))


def run(job: Job, command: tuple[str, int, int, int, int], at: datetime) -> None:
    name, delta, n, m, gpu_ms = command
    attempt = job.attempt + delta
    if name == "queue":
        job.queue(at)
    elif name == "start":
        job.start(attempt, at)
    elif name == "report_progress":
        job.report_progress(attempt, n, 100, None, 1.0, n * 10, at)
    elif name == "save_checkpoint":
        job.save_checkpoint(attempt, n, f"ck/{n}", at)
    elif name == "meter_usage":
        job.meter_usage(attempt, n, n + m, "a100-80gb", 4, gpu_ms, 2_100_000, "2026-03", at)
    elif name == "raise_alert":
        job.raise_alert("job" if n % 2 else "budget", [50, 80, 100][m % 3], 1, 2, at)
    elif name == "request_stop":
        job.request_stop("asked", at)
    elif name == "mark_stopped":
        job.mark_stopped(at)
    elif name == "mark_succeeded":
        job.mark_succeeded(at, metrics={"loss": 1.0})
    elif name == "mark_failed":
        job.mark_failed("boom", at)
    elif name == "retry":
        job.retry(attempt, "again", at)
    elif name == "mark_lost":
        job.mark_lost(None, at)


def uncapped_job(job_id: str) -> Job:
    """A job on four a100s (what the tests meter) with no cost cap, so only the commands decide its state."""
    return new_job(T0, job_id=job_id, gpu_type="a100-80gb", gpu_count=4, **NO_CAP)


def check_invariants(job: Job) -> None:
    assert job.state in set(JobState)
    assert job.attempt >= 0
    if job.state in ACTIVE_STATES - {JobState.SUBMITTED, JobState.QUEUED}:
        assert job.attempt >= 1
    assert all(1 <= int(a) <= job.attempt for a in job.metered_seq)
    assert job.cost().cost_usd_micros >= 0
    assert all(0 <= ms <= job.usage[key] for key, ms in job.credited.items())  # never credited past charged
    for attempt, credited in job.attempt_credited.items():
        assert all(ms <= job.attempt_usage[attempt][key] for key, ms in credited.items())


def _credit_events(job: Job, version: int) -> int:
    """How many of the job's events since ``version`` were faults and credits."""
    new = job.pending_events[version - job.version :]
    return sum(isinstance(e, Job.AttemptFaulted | Job.UsageCredited) for e in new)
    assert len(job.alerts) == len(set(job.alerts))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2), st.lists(COMMANDS, max_size=40))
def test_random_commands_keep_the_job_valid(
    warm_up: int, commands: list[tuple[str, int, int, int, int]]
) -> None:
    """``warm_up`` first queues (1) or queues and starts (2) the job, so every state is reached often."""
    job = uncapped_job("job_p")
    if warm_up >= 1:
        job.queue(T0)
    if warm_up == 2:
        job.start(1, T0)
    for i, command in enumerate(commands, start=1):
        before = copy.deepcopy(dict(vars(job)))
        state, version, billed = job.state, job.version, job.cost().gpu_ms
        try:
            run(job, command, T0 + timedelta(seconds=i))
        except PlatformError:
            assert job.version == version, f"{command} was refused but changed the version"
            assert dict(vars(job)) == before, f"{command} was refused but changed the job"
        else:
            # one event per accepted command, and the credits it makes due (a lost attempt's, a cap's)
            assert job.version == version + 1 + _credit_events(job, version)
            assert job.state == state or job.state in TRANSITIONS[state], (
                f"{state} -> {job.state} by {command}"
            )
            if state in TERMINAL_STATES:
                assert job.state == state
        assert job.cost().gpu_ms >= billed
        check_invariants(job)
        event(f"reached {job.state}")

    replayed = None
    for recorded in job.pending_events:
        replayed = recorded.mutate(replayed)
    assert replayed is not None
    pending = "_pending_events"
    assert {k: v for k, v in vars(replayed).items() if k != pending} == {
        k: v for k, v in vars(job).items() if k != pending
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(NUMBERS, st.integers(min_value=0, max_value=5), st.integers(0, 10**6)), max_size=30)
)
def test_redelivered_heartbeat_batches_are_never_billed_twice(batches: list[tuple[int, int, int]]) -> None:
    job = uncapped_job("job_m")
    job.queue(T0)
    job.start(1, T0)
    billed: set[int] = set()
    expected_ms = 0
    for first, extra, gpu_ms in batches:
        seqs = set(range(first, first + extra + 1))
        try:
            job.meter_usage(1, first, first + extra, "a100-80gb", 4, gpu_ms, 2_100_000, "2026-03", T0)
        except PlatformError:
            assert min(seqs) <= max(billed)  # refused only when it overlaps what was billed
        else:
            assert not seqs & billed
            billed |= seqs
            expected_ms += gpu_ms
    assert job.cost().gpu_ms == expected_ms
