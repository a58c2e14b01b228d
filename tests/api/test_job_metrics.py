"""``GET /fine-tune/{job_id}/metrics``: a job's loss curves from its attempts' metrics objects."""

from __future__ import annotations

import json

from storage import layout
from tests.api.conftest import Api, User


def _write(api: Api, user: User, job_id: str, attempt: int, records: list[dict], tail: bytes = b"") -> None:
    name = layout.attempt_metrics(user.user_id, job_id, attempt)
    at = "2026-01-01T00:00:00Z"
    body = "".join(json.dumps({**r, "attempt": attempt, "at": at}) + "\n" for r in records)
    api.rt.bucket.write(name, body.encode() + tail)


def _started(api: Api, user: User, attempts: int = 1) -> str:
    job_id = api.job(user)
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    for n in range(2, attempts + 1):
        app.retry_job(job_id, n, "preempted", now)
        app.start_job(job_id, n, now)
    api.settle(user)
    return job_id


def step(n: int, loss: float) -> dict:
    return {"event": "step", "step": n, "total_steps": 10, "epoch": n / 10, "loss": loss, "tokens": 100 * n}


def test_the_curves_come_from_the_metrics_file_and_after_step_asks_for_newer(api: Api, ann: User) -> None:
    job_id = _started(api, ann)
    records = [step(1, 2.5), step(2, 2.0), {"event": "eval", "step": 2, "eval_loss": 2.2}, step(3, 1.5)]
    _write(api, ann, job_id, 1, records, tail=b'{"event": "step", "step": 4, "lo')  # a line being written
    reply = api.client.get(f"/fine-tune/{job_id}/metrics", headers=ann.headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [(p["step"], p["loss"]) for p in body["train"]] == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert [(p["step"], p["eval_loss"]) for p in body["eval"]] == [(2, 2.2)]
    assert body["train"][0]["tokens"] == 100 and body["train"][0]["attempt"] == 1
    assert body["last_step"] == 3
    url = f"/fine-tune/{job_id}/metrics"
    newer = api.client.get(url, params={"after_step": 2}, headers=ann.headers).json()
    assert [p["step"] for p in newer["train"]] == [3] and newer["eval"] == []


def test_a_job_with_no_metrics_yet_has_empty_curves(api: Api, ann: User) -> None:
    job_id = api.job(ann)
    body = api.client.get(f"/fine-tune/{job_id}/metrics", headers=ann.headers).json()
    assert body == {"job_id": job_id, "train": [], "eval": [], "last_step": 0}


def test_another_users_job_metrics_answer_404(api: Api, ann: User, bob: User) -> None:
    job_id = _started(api, ann)
    _write(api, ann, job_id, 1, [step(1, 2.5)])
    reply = api.client.get(f"/fine-tune/{job_id}/metrics", headers=bob.headers)
    assert reply.status_code == 404
    assert api.client.get("/fine-tune/job-nope/metrics", headers=ann.headers).status_code == 404


def test_a_negative_after_step_is_refused(api: Api, ann: User) -> None:
    job_id = api.job(ann)
    reply = api.client.get(f"/fine-tune/{job_id}/metrics", params={"after_step": -1}, headers=ann.headers)
    assert reply.status_code == 400


def test_a_step_a_later_attempt_ran_again_shows_its_values(api: Api, ann: User) -> None:
    job_id = _started(api, ann, attempts=2)
    _write(api, ann, job_id, 1, [step(1, 2.5), step(2, 2.0), step(3, 1.9)])
    _write(api, ann, job_id, 2, [step(2, 1.8), step(3, 1.6), step(4, 1.2)])  # resumed from step 1
    body = api.client.get(f"/fine-tune/{job_id}/metrics", headers=ann.headers).json()
    assert [(p["step"], p["loss"], p["attempt"]) for p in body["train"]] == [
        (1, 2.5, 1), (2, 1.8, 2), (3, 1.6, 2), (4, 1.2, 2)
    ]  # fmt: skip
