"""The console's datasets pages: upload (the API's checks), the report's failing lines, delete."""

from __future__ import annotations

import html
import re

from tests.api.conftest import Api, User, chat_lines
from tests.console.conftest import csrf_of, signed_in

HTML = {"Accept": "text/html"}
BAD = (
    chat_lines(2)
    + b'{"messages": "not a list"}\n'
    + chat_lines(1)
    + b"not json at all\n"
    + chat_lines(8, start=3)
)


def _upload(client, token: str, data: bytes, filename: str = "train.jsonl"):  # type: ignore[no-untyped-def]
    return client.post(
        "/console/datasets/upload",
        params={"filename": filename},
        content=data,
        headers={"Content-Type": "application/octet-stream", "X-CSRFToken": token},
    )


def test_the_datasets_page_lists_them_and_has_a_labelled_upload_form(api: Api, ann: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    client = signed_in(api, ann)
    page = client.get("/console/datasets")
    assert page.status_code == 200 and "<title>Datasets · tune console</title>" in page.text
    assert f'<a href="/console/datasets/{dataset_id}">{dataset_id}</a>' in page.text
    assert '<label for="upload-file">' in page.text and 'id="upload-progress"' in page.text
    assert '<a href="/console/datasets" aria-current="page">Datasets</a>' in page.text
    assert csrf_of(page.text)


def test_an_upload_needs_the_csrf_token_and_answers_like_the_api(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/datasets").text)
    refused = client.post(
        "/console/datasets/upload", content=chat_lines(), headers={"Content-Type": "text/plain"}
    )
    assert refused.status_code == 403
    reply = _upload(client, token, chat_lines(12))
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["status"] == "validated" and body["page"] == f"/console/datasets/{body['dataset_id']}"
    api_view = api.client.get(f"/datasets/{body['dataset_id']}", headers=ann.headers).json()
    assert api_view["rows"] == 12 and api_view["status"] == "validated"
    page = client.get(body["page"])
    assert "Every line is valid: 12 rows ready for training." in page.text
    too_big = _upload(client, token, b"x" * (api.settings.max_upload_bytes + 1), "big.jsonl")
    assert too_big.status_code == 413 and 'role="alert"' in too_big.text  # what the script shows


def test_a_rejected_upload_shows_each_failing_line(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/datasets").text)
    body = _upload(client, token, BAD, "bad.jsonl").json()
    assert body["status"] == "rejected"
    page = client.get(body["page"])
    assert page.status_code == 200 and "<title>Dataset bad.jsonl · tune console</title>" in page.text
    assert "Rejected: 2 failing lines." in page.text
    lines = re.findall(r'<th scope="row" class="num">(\w+)</th><td class="wrap">([^<]+)</td>', page.text)
    assert [line for line, _ in lines] == ["3", "5"], lines
    api_errors = api.client.get(f"/datasets/{body['dataset_id']}", headers=ann.headers).json()["errors"]
    assert [html.unescape(m) for _, m in lines] == [e["message"] for e in api_errors]


def test_delete_is_refused_while_a_job_uses_the_dataset_with_the_reason(api: Api, ann: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    job_id = api.job(ann, dataset_id)
    client = signed_in(api, ann)
    page = client.get(f"/console/datasets/{dataset_id}")
    assert f'<a href="/console/jobs/{job_id}">{job_id}</a>' in page.text and 'id="in-use"' in page.text
    token = csrf_of(page.text)
    assert client.post(f"/console/datasets/{dataset_id}/delete").status_code == 403  # no token
    refused = client.post(f"/console/datasets/{dataset_id}/delete", data={"_csrf_token": token})
    assert refused.status_code == 409 and job_id in refused.text and "<title>Conflict" in refused.text
    api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers)  # a job not yet queued: stopped at once
    done = client.post(
        f"/console/datasets/{dataset_id}/delete", data={"_csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/datasets"
    assert api.client.get(f"/datasets/{dataset_id}", headers=ann.headers).status_code == 404


def test_another_users_dataset_answers_404(api: Api, ann: User, bob: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    client = signed_in(api, bob)
    assert client.get(f"/console/datasets/{dataset_id}", headers=HTML).status_code == 404
    token = csrf_of(client.get("/console/datasets").text)
    assert (
        client.post(f"/console/datasets/{dataset_id}/delete", data={"_csrf_token": token}).status_code == 404
    )
    assert api.client.get(f"/datasets/{dataset_id}", headers=ann.headers).status_code == 200


def test_a_report_past_its_limit_says_it_lists_only_the_first_failing_lines(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/datasets").text)
    body = _upload(client, token, chat_lines(12) + b"not json\n" * 80, "worse.jsonl").json()
    page = client.get(body["page"])
    assert "Rejected: the first 50 failing lines" in page.text  # not "50 failing lines": there are 80
    assert page.text.count('<th scope="row" class="num">') == 50
