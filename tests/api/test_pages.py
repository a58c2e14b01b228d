"""Pages of the job, model and dataset lists: stable order, filters, cursors, compression."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.job import Job
from storage import layout
from tests.api.conftest import Api, User

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def add_jobs(
    api: Api, user: User, ids: list[str], *, at: datetime, step: timedelta, per_commit: int = 250
) -> None:
    """Jobs submitted straight to the domain (as many per commit), ``step`` apart from ``at``; every
    third pair shares its created_at, so ids break ties."""
    app = api.rt.user_app(user.user_id)
    jobs = []
    for i, job_id in enumerate(ids):
        jobs.append(
            Job.submit(
                job_id=job_id,
                user_id=user.user_id,
                base_model="smol" if i % 4 == 0 else "tiny-llama",
                dataset_id="ds_1",
                model_id=f"m-{job_id}",
                config={},
                gpu_type="a100-80gb",
                gpu_count=1,
                max_cost_usd_micros=None,
                estimate_usd_micros=None,
                at=at + step * (i - i % 2 * (i % 3 == 0)),
            )
        )
        if len(jobs) == per_commit:
            app.save(*jobs)
            jobs = []
    if jobs:
        app.save(*jobs)
    api.settle(user)


def page(api: Api, user: User, kind: str = "fine-tune", **params: Any) -> dict[str, Any]:
    reply = api.client.get(f"/{kind}/{user.user_id}/list", params=params, headers=user.headers)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def walk(api: Api, user: User, kind: str = "fine-tune", between: Any = None, **params: Any) -> list[dict]:
    rows: list[dict] = []
    after = None
    while True:
        reply = page(api, user, kind, **params, **({"after": after} if after else {}))
        rows += reply[{"fine-tune": "jobs"}.get(kind, kind)]
        if not reply["has_more"]:
            assert reply["next"] is None
            return rows
        after = reply["next"]
        if between is not None:
            between()


def newest_first(rows: list[dict], id_field: str = "job_id") -> list[dict]:
    return sorted(
        rows, key=lambda r: (r["created_at"].replace("Z", ".000000Z")[:27], r[id_field]), reverse=True
    )


def test_paging_through_2500_jobs_gives_each_once_in_order_while_jobs_are_added(api: Api, ann: User) -> None:
    first = [f"job_{i:05d}" for i in range(2500)]
    add_jobs(api, ann, first, at=T0, step=timedelta(seconds=1))
    everything = page(api, ann)  # a client that does not page: every job, oldest first, as before
    assert [j["job_id"] for j in everything["jobs"]] == [
        j["job_id"] for j in newest_first(everything["jobs"])
    ][::-1]
    assert len(everything["jobs"]) == 2500 and everything["has_more"] is False
    added = iter(range(100_000))

    def more_jobs() -> None:  # newer jobs arrive while the client walks the older ones
        ids = [f"new_{next(added):05d}" for _ in range(3)]
        add_jobs(api, ann, ids, at=T0 + timedelta(days=1), step=timedelta(milliseconds=1))

    rows = walk(api, ann, between=more_jobs, limit=97)
    assert [r["job_id"] for r in rows] == [r["job_id"] for r in newest_first(everything["jobs"])]
    assert len({r["job_id"] for r in rows}) == 2500
    again = walk(api, ann, limit=100)  # a fresh walk sees the new ones first
    assert len(again) > 2500 and again[0]["job_id"].startswith("new_") and again == newest_first(again)


def test_filters_choose_before_paging(api: Api, ann: User) -> None:
    ids = [f"job_{i:03d}" for i in range(60)]
    add_jobs(api, ann, ids, at=T0, step=timedelta(minutes=1))
    app = api.rt.user_app(ann.user_id)
    for job_id in ids[10:20]:
        app.queue_job(job_id, T0 + timedelta(hours=5))
    api.settle(ann)
    queued = walk(api, ann, state="queued", limit=3)
    assert sorted(r["job_id"] for r in queued) == ids[10:20] and queued == newest_first(queued)
    smol = walk(api, ann, base_model="smol", limit=4)
    assert {r["job_id"] for r in smol} == {ids[i] for i in range(0, 60, 4)}
    window = walk(
        api,
        ann,
        limit=5,
        created_from=(T0 + timedelta(minutes=30)).isoformat(),
        created_to="2026-03-01T00:40:00Z",
    )
    assert window and all("2026-03-01T00:30:00" <= r["created_at"] < "2026-03-01T00:40:00" for r in window)
    assert len(window) == len(
        [
            r
            for r in page(api, ann)["jobs"]
            if "2026-03-01T00:30:00" <= r["created_at"] < "2026-03-01T00:40:00"
        ]
    )
    both = walk(api, ann, limit=2, state="queued", base_model="smol")
    assert {r["job_id"] for r in both} == {ids[12], ids[16]}
    assert page(api, ann, state="running", limit=5) == {"jobs": [], "position": page(api, ann)["position"],
                                                        "has_more": False, "next": None}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"after": "not a cursor!"}, "after"),
        ({"after": "W10"}, "after"),  # base64 of [] : no cursor
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"created_from": "2026-03-02T00:00:00Z", "created_to": "2026-03-01T00:00:00Z"}, "created_to"),
        ({"state": "asleep"}, "state"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api: Api, ann: User, params: dict[str, str], where: str) -> None:
    reply = api.client.get(f"/fine-tune/{ann.user_id}/list", params=params, headers=ann.headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["where"] == where and reply.json()["error"]["message"]


def test_a_cursor_of_another_list_is_refused(api: Api, ann: User) -> None:
    add_jobs(api, ann, [f"job_{i}" for i in range(5)], at=T0, step=timedelta(seconds=1))
    cursor = page(api, ann, limit=2)["next"]
    reply = api.client.get(f"/models/{ann.user_id}/list", params={"after": cursor}, headers=ann.headers)
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "after"
    assert "models list" in reply.json()["error"]["message"]


def test_a_cursor_is_no_capability(api: Api, ann: User, bob: User) -> None:
    add_jobs(api, ann, [f"ann_{i}" for i in range(30)], at=T0, step=timedelta(seconds=1))
    add_jobs(api, bob, [f"bob_{i}" for i in range(5)], at=T0, step=timedelta(seconds=2))
    cursor = page(api, ann, limit=10)["next"]
    # ann's cursor on bob's list only positions a walk in bob's jobs
    reply = page(api, bob, after=cursor, limit=100)
    assert reply["jobs"] and all(j["job_id"].startswith("bob_") for j in reply["jobs"])
    # and with it on ann's list, bob still gets nothing of hers
    denied = api.client.get(f"/fine-tune/{ann.user_id}/list", params={"after": cursor}, headers=bob.headers)
    assert denied.status_code in (403, 404) and "ann_" not in denied.text


def test_models_and_datasets_page_too(api: Api, ann: User) -> None:
    ids = [api.upload(ann)["dataset_id"] for _ in range(5)]
    rows = walk(api, ann, "datasets", limit=2)
    assert sorted(r["dataset_id"] for r in rows) == sorted(ids) and rows == newest_first(rows, "dataset_id")
    assert walk(api, ann, "datasets", limit=2, state="rejected") == []
    assert page(api, ann, "models", limit=5) == {"models": [], "position": 0, "has_more": False, "next": None}


def test_the_index_is_what_a_state_change_writes(api: Api, ann: User) -> None:
    """A job's state change writes its page of the index and the head, not the complete jobs.json
    (coalesced: written at most once per interval)."""
    add_jobs(api, ann, [f"job_{i:03d}" for i in range(450)], at=T0, step=timedelta(seconds=1))
    api.rt.projector.flush_deferred(force=True)
    names = [layout.jobs(ann.user_id), *(layout.index_page(ann.user_id, "jobs", p) for p in range(3))]
    before = {n: api.rt.bucket.stat(n).generation for n in names}
    api.rt.user_app(ann.user_id).queue_job("job_440", T0 + timedelta(days=1))
    api.settle(ann)
    after = {n: api.rt.bucket.stat(n).generation for n in names}
    changed = {n for n in names if before[n] != after[n]}
    assert changed == {layout.index_page(ann.user_id, "jobs", 2)}  # 200 jobs a page: job 440 is in page 2
    assert page(api, ann, state="queued", limit=5)["jobs"][0]["job_id"] == "job_440"
    api.rt.projector.flush_deferred(force=True)
    assert api.rt.bucket.stat(layout.jobs(ann.user_id)).generation != before[layout.jobs(ann.user_id)]


def test_large_replies_are_gzipped(api: Api, ann: User) -> None:
    add_jobs(api, ann, [f"job_{i:03d}" for i in range(100)], at=T0, step=timedelta(seconds=1))
    reply = api.client.get(
        f"/fine-tune/{ann.user_id}/list",
        params={"limit": 100},
        headers={**ann.headers, "Accept-Encoding": "gzip"},
    )
    assert reply.headers["content-encoding"] == "gzip"
    assert len(reply.json()["jobs"]) == 100  # httpx undid it
    assert int(reply.headers["content-length"]) < len(gzip.compress(reply.content)) * 2
