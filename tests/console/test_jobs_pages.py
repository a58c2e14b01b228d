"""The console's jobs pages: the list and its filter, a job's page and its figures, stop, 404s."""

from __future__ import annotations

import json
import re

from domain.money import format_usd
from storage import layout
from tests.api.conftest import Api, User
from tests.console.conftest import csrf_of, signed_in

HTML = {"Accept": "text/html"}


def _running(api: Api, user: User) -> str:
    job_id = api.job(user)
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    api.settle(user)
    return job_id


def _metrics(api: Api, user: User, job_id: str, steps: range) -> None:
    lines = [
        {
            "event": "step",
            "step": n,
            "total_steps": 10,
            "epoch": n / 10,
            "loss": 3.0 - n / 10,
            "tokens": 50 * n,
        }
        for n in steps
    ]
    lines.append({"event": "eval", "step": steps[-1], "eval_loss": 2.75})
    text = "".join(json.dumps({**r, "attempt": 1, "at": "2026-01-01T00:00:00+00:00"}) + "\n" for r in lines)
    api.rt.bucket.write(layout.attempt_metrics(user.user_id, job_id, 1), text.encode())


def test_the_jobs_list_shows_state_base_model_progress_and_cost(api: Api, ann: User) -> None:
    queued, running = api.job(ann), _running(api, ann)
    client = signed_in(api, ann)
    page = client.get("/console/jobs")
    assert page.status_code == 200 and "<title>Jobs · tune console</title>" in page.text
    for job_id in (queued, running):
        assert f'<a href="/console/jobs/{job_id}">{job_id}</a>' in page.text
    assert page.text.count("tiny-llama") >= 2 and 'data-usd-micros="0"' in page.text
    assert '<label for="state-filter">State</label>' in page.text
    only = client.get("/console/jobs", params={"state": "running"})
    assert running in only.text and queued not in only.text
    partial = client.get("/console/jobs", params={"state": "running"}, headers={"HX-Request": "true"})
    assert running in partial.text and "<html" not in partial.text  # htmx swaps the table alone


def test_an_unknown_state_is_a_400_page(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    page = client.get("/console/jobs", params={"state": "sleeping"})
    assert page.status_code == 400 and "unknown state" in page.text and "<html" in page.text


def test_the_job_page_shows_the_curves_progress_and_the_apis_cost(api: Api, ann: User) -> None:
    job_id = _running(api, ann)
    _metrics(api, ann, job_id, range(1, 5))
    api.rt.bucket.write(layout.attempt_log(ann.user_id, job_id, 1), b"loading\nstep 4 <b>loss</b>\n")
    client = signed_in(api, ann)
    page = client.get(f"/console/jobs/{job_id}")
    assert page.status_code == 200, page.text
    assert f"<title>Job {job_id} · tune console</title>" in page.text
    data = json.loads(
        re.search(r'<script type="application/json" id="job-data">(.*?)</script>', page.text, re.S)[1]
    )
    assert [p["step"] for p in data["curves"]["train"]] == [1, 2, 3, 4]
    assert data["live"] == f"/console/jobs/{job_id}/live?after_step=4&log=27"
    status = api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()
    assert (
        f'data-usd-micros="{status["cost_usd_micros"]}">{format_usd(status["cost_usd_micros"])}<' in page.text
    )
    assert "step 4 &lt;b&gt;loss&lt;/b&gt;" in page.text  # the log is escaped
    assert 'action="/console/jobs/' + job_id + '/stop"' in page.text and "Stop job" in page.text


def test_another_users_job_page_answers_404(api: Api, ann: User, bob: User) -> None:
    job_id = _running(api, ann)
    client = signed_in(api, bob)
    for path in (f"/console/jobs/{job_id}", f"/console/jobs/{job_id}/live", "/console/jobs/job-unknown"):
        reply = client.get(path, headers=HTML)
        assert reply.status_code == 404, path
    page = client.get(f"/console/jobs/{job_id}")
    assert f"no job {job_id}" in page.text and "<title>Not found · tune console</title>" in page.text
    token = csrf_of(client.get("/console/jobs").text)
    assert client.post(f"/console/jobs/{job_id}/stop", data={"_csrf_token": token}).status_code == 404
    assert api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()["status"] == "running"


def test_the_stop_button_stops_the_job_and_needs_a_csrf_token(api: Api, ann: User) -> None:
    job_id = _running(api, ann)
    client = signed_in(api, ann)
    page = client.get(f"/console/jobs/{job_id}")
    refused = client.post(f"/console/jobs/{job_id}/stop", follow_redirects=False)
    assert refused.status_code == 403
    assert api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()["status"] == "running"
    reply = client.post(
        f"/console/jobs/{job_id}/stop", data={"_csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert reply.status_code == 303 and reply.headers["location"] == f"/console/jobs/{job_id}"
    assert api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()["status"] == "stopping"
    again = client.get(f"/console/jobs/{job_id}")
    assert re.search(
        r'<form method="post" action="/console/jobs/[^"]+/stop" data-when="stoppable" hidden>', again.text
    )


def _events(text: str) -> list[tuple[str, str, str]]:
    """(event, data, id) of each server-sent event in ``text``."""
    found = []
    for block in text.strip().split("\r\n\r\n"):
        fields: dict[str, list[str]] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        found.append(
            (
                "".join(fields.get("event", [])),
                "\n".join(fields.get("data", [])),
                "".join(fields.get("id", [])),
            )
        )
    return found


def test_the_live_stream_sends_new_points_status_and_log_then_ends(api: Api, ann: User) -> None:
    job_id = _running(api, ann)
    _metrics(api, ann, job_id, range(1, 6))
    api.rt.bucket.write(layout.attempt_log(ann.user_id, job_id, 1), b"one\ntwo\n")
    app = api.rt.user_app(ann.user_id)
    app.request_stop(job_id, reason="test", at=api.rt.clock())
    app.mark_stopped(job_id, api.rt.clock(), step=5)
    api.settle(ann)
    client = signed_in(api, ann)
    reply = client.get(f"/console/jobs/{job_id}/live", params={"after_step": 3, "log": 4})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = _events(reply.text)
    kinds = [e[0] for e in events]
    assert kinds == ["metrics", "status", "log", "end"], events
    points = json.loads(events[0][1])
    assert [p["step"] for p in points["train"]] == [4, 5] and [p["step"] for p in points["eval"]] == [5]
    status = json.loads(events[1][1])
    assert status["state"] == "stopped" and status["terminal"] and not status["stoppable"]
    assert events[2][1] == "two\n" or events[2][1] == "two"
    assert events[-1][2] == "5.8"  # <last step>.<log offset>: what a reconnect resumes from
    resumed = client.get(f"/console/jobs/{job_id}/live", headers={"Last-Event-ID": "5.8"})
    assert [e[0] for e in _events(resumed.text)] == ["status", "end"]


def test_the_live_stream_sends_one_round_of_events_a_poll_however_fast_the_job_trains(
    api: Api, ann: User
) -> None:
    import anyio

    from api.console.live import job_updates

    job_id = _running(api, ann)
    _metrics(api, ann, job_id, range(1, 3))
    poll_s = 0.3

    async def two_rounds() -> tuple[list[str], float]:
        updates = job_updates(api.rt, ann.user_id, job_id, after_step=0, log_offset=0, poll_s=poll_s)
        first = await updates.__anext__()
        assert first.event == "metrics"
        _metrics(api, ann, job_id, range(1, 5))  # the object grows by steps 3-4 at once: the job trains fast
        kinds, started = [], anyio.current_time()
        while (event := await updates.__anext__()).event != "metrics":
            kinds.append(event.event)
        await updates.aclose()
        return [*kinds, event.event], anyio.current_time() - started

    kinds, waited = anyio.run(two_rounds)
    assert kinds == ["status", "metrics"], kinds  # the first round's status, then the next look's points
    assert waited >= poll_s * 0.9, waited  # not before the next poll
