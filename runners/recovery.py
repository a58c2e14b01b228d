"""After a restart: hand the dispatcher every job still waiting to run.

The dispatcher's queue lives in memory, so a new ``tune serve`` reads the projector's views
(``platform/metadata/users.json`` and each user's ``metadata/jobs.json``) and submits every
job that is ``submitted``, ``queued`` or ``retrying``, oldest first across users.
``submit`` checks each job's own events, so a view that lags behind does no harm. Jobs left
``running`` by a runner that died with the old server are the ledger's to find (lost); one whose
runner survived is adopted by the ledger if it still heartbeats to it, else (the local stdout
transport) the runner ends itself ``retrying`` and the ledger hands the job to the dispatcher.
A dispatcher on its own (``roles.dispatcher``) first adopts the runs still going
(``Dispatcher.adopt_alive``), so a job whose runner survived it is not launched a second time.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from domain.job_states import WAITING_STATES
from projections import jobs as job_views
from projections import users as user_views
from runners.dispatcher import Dispatcher, JobRef
from storage import Bucket, ObjectNotFound, layout

__all__ = ["resubmit_waiting", "waiting_jobs"]


def waiting_jobs(bucket: Bucket) -> list[JobRef]:
    """Jobs the views show waiting to run, oldest first."""
    rows = sorted(_rows(bucket), key=lambda item: (item[0].created_at or "", item[0].job_id))
    return [JobRef(user_id, row.job_id) for row, user_id in rows if row.status in WAITING_STATES]


def resubmit_waiting(dispatcher: Dispatcher, bucket: Bucket) -> int:
    """Submit every waiting job to ``dispatcher``; return how many."""
    refs = waiting_jobs(bucket)
    for ref in refs:
        dispatcher.submit(ref.user_id, ref.job_id)
    return len(refs)


def _rows(bucket: Bucket) -> Iterator[tuple[job_views.JobRow, str]]:
    try:
        users = msgspec.json.decode(bucket.read(layout.users()), type=user_views.UsersView)
    except ObjectNotFound:
        return
    for user in users.users:
        try:
            data = bucket.read(layout.jobs(user.user_id))
        except ObjectNotFound:
            continue
        for row in msgspec.json.decode(data, type=job_views.JobsView).jobs:
            yield row, user.user_id
