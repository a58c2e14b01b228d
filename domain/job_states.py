"""A job's states, the only transitions between them, and the sets of states callers ask about.

The one home of the job states: ``domain.job`` (the aggregate), the projections, the runners
and the CLI all use these names, never the strings. Imports only the standard library, so the
CLI can use it without loading eventsourcing. Values are the stored strings (views, API).

States and the only transitions allowed (``TRANSITIONS``)::

    submitted ─► queued ─► running ─► succeeded | failed | stopped
        │           │         ├─► stopping (StopRequested) ─► stopped | succeeded | failed | lost
        │           │         ├─► retrying ─► running (next attempt)
        │           │         ├─► lost ─► retrying | failed | stopped
        │           │         └─► pausing (PauseRequested) ─► paused | stopping | succeeded | failed | lost
        ├───────────┴─► stopped   (cancel: a stop request before anything runs;
        │                          also from retrying, lost and paused)
        └───────────┴─► paused    (a pause request before anything runs; also from retrying, lost
                                   and, once its runner checkpointed and ended, pausing)
    paused ─► queued (resume: a new attempt from the last checkpoint) | stopped

Adding a state: add it to ``JobState`` and ``TRANSITIONS`` and to the named sets it belongs to;
only code that treats the new state differently changes elsewhere.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_STATES",
    "CANCELLABLE_STATES",
    "LIMIT_STOPPABLE_STATES",
    "PAUSE_AT_ONCE_STATES",
    "REPORTING_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "WAITING_STATES",
    "JobState",
]


class JobState(StrEnum):
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    RETRYING = "retrying"
    LOST = "lost"
    PAUSING = "pausing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.SUBMITTED: frozenset({_S.QUEUED, _S.STOPPED, _S.PAUSED}),
    _S.QUEUED: frozenset({_S.RUNNING, _S.STOPPED, _S.FAILED, _S.PAUSED}),
    _S.RUNNING: frozenset(
        {_S.STOPPING, _S.SUCCEEDED, _S.FAILED, _S.STOPPED, _S.RETRYING, _S.LOST, _S.PAUSING}
    ),
    _S.STOPPING: frozenset({_S.STOPPED, _S.SUCCEEDED, _S.FAILED, _S.LOST}),
    _S.RETRYING: frozenset({_S.RUNNING, _S.STOPPED, _S.FAILED, _S.PAUSED}),
    _S.LOST: frozenset({_S.RETRYING, _S.FAILED, _S.STOPPED, _S.PAUSED}),
    _S.PAUSING: frozenset({_S.PAUSED, _S.STOPPING, _S.SUCCEEDED, _S.FAILED, _S.LOST}),
    _S.PAUSED: frozenset({_S.QUEUED, _S.STOPPED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.STOPPED: frozenset(),
}

TERMINAL_STATES = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
"""Finished for good: nothing leads out (``succeeded``, ``failed``, ``stopped``)."""

ACTIVE_STATES = frozenset(JobState) - TERMINAL_STATES
"""States that hold (or wait for) resources: count against quotas, keep datasets/models in use.
A paused job is one of them: it keeps its slot of the concurrent-job quota and its dataset, so
its resume is never refused for either."""

WAITING_STATES = frozenset({_S.SUBMITTED, _S.QUEUED, _S.RETRYING})
"""Waiting for the dispatcher to launch an attempt (handed to it again after a restart)."""

REPORTING_STATES = frozenset({_S.RUNNING, _S.STOPPING, _S.PAUSING})
"""An attempt is out running: it reports progress and checkpoints, and the ledger marks it
``lost`` when its heartbeats stop."""

PAUSE_AT_ONCE_STATES = frozenset({_S.SUBMITTED, _S.QUEUED, _S.RETRYING, _S.LOST})
"""Nothing runs: a pause request pauses the job at once (no ``pausing``, nothing to checkpoint)."""

CANCELLABLE_STATES = PAUSE_AT_ONCE_STATES | {_S.PAUSED}
"""Nothing runs: a stop request stops the job at once (no ``stopping``)."""

LIMIT_STOPPABLE_STATES = frozenset({_S.RUNNING, _S.RETRYING, _S.LOST, _S.PAUSING})
"""What a spending limit stops: the job has run (so it costs money) and is neither stopping
nor finished."""
