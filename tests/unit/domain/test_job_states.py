"""The job states: one enum, a table that covers it, and named sets that agree with the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from domain.job_states import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    LIMIT_STOPPABLE_STATES,
    PAUSE_AT_ONCE_STATES,
    REPORTING_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    WAITING_STATES,
    JobState,
)

S = JobState
ROOT = Path(__file__).resolve().parents[3]


def test_values_are_the_stored_strings() -> None:
    assert [s.value for s in JobState] == [
        "submitted", "queued", "running", "stopping", "retrying", "lost", "pausing", "paused",
        "succeeded", "failed", "stopped",
    ]  # fmt: skip


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert set().union(*TRANSITIONS.values()) == set(JobState) - {S.SUBMITTED}  # only submit creates a job
    reached, todo = {S.SUBMITTED}, [S.SUBMITTED]
    while todo:
        for target in TRANSITIONS[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert reached == set(JobState)


def test_terminal_and_active_split_the_states() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.STOPPED} == TERMINAL_STATES
    assert not TERMINAL_STATES & ACTIVE_STATES
    assert set(JobState) == TERMINAL_STATES | ACTIVE_STATES


def test_the_named_sets_agree_with_the_table() -> None:
    for named in (WAITING_STATES, REPORTING_STATES, CANCELLABLE_STATES, LIMIT_STOPPABLE_STATES):
        assert named <= ACTIVE_STATES
    assert all(S.RUNNING in TRANSITIONS[s] or S.QUEUED in TRANSITIONS[s] for s in WAITING_STATES)
    assert not WAITING_STATES & REPORTING_STATES
    assert {s for s, targets in TRANSITIONS.items() if S.LOST in targets} == REPORTING_STATES
    assert all(S.STOPPED in TRANSITIONS[s] for s in CANCELLABLE_STATES)
    assert not CANCELLABLE_STATES & REPORTING_STATES
    stop_requestable = CANCELLABLE_STATES | {s for s, targets in TRANSITIONS.items() if S.STOPPING in targets}
    assert stop_requestable >= LIMIT_STOPPABLE_STATES
    assert not LIMIT_STOPPABLE_STATES & {S.SUBMITTED, S.QUEUED, S.STOPPING}


def test_pause_and_resume_follow_the_table() -> None:
    assert all(S.PAUSED in TRANSITIONS[s] for s in PAUSE_AT_ONCE_STATES)
    assert not PAUSE_AT_ONCE_STATES & REPORTING_STATES
    assert {s for s, targets in TRANSITIONS.items() if S.PAUSING in targets} == {S.RUNNING}
    assert TRANSITIONS[S.PAUSING] == {S.PAUSED, S.STOPPING, S.SUCCEEDED, S.FAILED, S.LOST}
    assert TRANSITIONS[S.PAUSED] == {S.QUEUED, S.STOPPED}  # resume, or stop at once
    assert S.PAUSING in REPORTING_STATES  # its runner still checkpoints: watched for silence
    assert S.PAUSED in CANCELLABLE_STATES and S.PAUSED not in WAITING_STATES | REPORTING_STATES
    assert S.PAUSED in ACTIVE_STATES and S.PAUSED not in LIMIT_STOPPABLE_STATES  # nothing is spent


def test_strings_from_views_match_the_members() -> None:
    assert "running" in REPORTING_STATES and "succeeded" in TERMINAL_STATES and "queued" in WAITING_STATES
    assert S("lost") is S.LOST and f"{S.STOPPING}" == "stopping"


def test_importing_it_loads_nothing_but_the_standard_library() -> None:
    code = "import sys, domain.job_states; print(sorted(m for m in sys.modules if m.startswith(('eventsourcing', 'msgspec'))))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
