"""After a restart, jobs the views show waiting are handed to the dispatcher, oldest first."""

from __future__ import annotations

import msgspec

from projections import jobs as job_views
from projections import users as user_views
from runners.dispatcher import JobRef
from runners.recovery import resubmit_waiting, waiting_jobs
from storage import LocalBucket, layout


def row(job_id: str, status: str, created_at: str) -> job_views.JobRow:
    return job_views.JobRow(
        job_id=job_id,
        model_id=f"model_{job_id}",
        dataset_id="ds_1",
        status=status,
        created_at=created_at,
        updated_at=created_at,
        base_model="tiny-llama",
        gpu_type="cpu",
        gpu_count=1,
    )


def write_views(bucket: LocalBucket) -> None:
    users = [
        user_views.UserRow(u, f"{u}@example.com", "user", "active", "2026-01-01T00:00:00Z")
        for u in ("a", "b", "c")
    ]
    bucket.write(layout.users(), msgspec.json.encode(user_views.UsersView(9, users)))
    listings = {
        "a": [
            row("job_a1", "succeeded", "2026-03-01T10:00:00Z"),
            row("job_a2", "queued", "2026-03-01T12:00:00Z"),
        ],
        "b": [
            row("job_b1", "retrying", "2026-03-01T11:00:00Z"),
            row("job_b2", "running", "2026-03-01T09:00:00Z"),
        ],
    }  # user c has no jobs yet
    for user_id, rows in listings.items():
        view = job_views.JobsView(3, rows)
        bucket.write(layout.jobs(user_id), msgspec.json.encode(view))


def test_waiting_jobs_are_resubmitted_oldest_first(local_bucket: LocalBucket) -> None:
    write_views(local_bucket)
    assert waiting_jobs(local_bucket) == [JobRef("b", "job_b1"), JobRef("a", "job_a2")]

    class Recording:
        submitted: list[tuple[str, str]] = []

        def submit(self, user_id: str, job_id: str) -> None:
            self.submitted.append((user_id, job_id))

    dispatcher = Recording()
    assert resubmit_waiting(dispatcher, local_bucket) == 2  # type: ignore[arg-type]
    assert dispatcher.submitted == [("b", "job_b1"), ("a", "job_a2")]


def test_a_bucket_without_views_has_nothing_waiting(local_bucket: LocalBucket) -> None:
    assert waiting_jobs(local_bucket) == []
