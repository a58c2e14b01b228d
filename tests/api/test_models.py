"""Models: show, list, download as a verified tar, delete (409 while a job builds on it)."""

from __future__ import annotations

import hashlib
import io
import tarfile

from tests.api.conftest import FILES, Api, User, finished_model


def test_show_and_list(api: Api, ann: User) -> None:
    job_id, model_id = finished_model(api, ann)
    shown = api.client.get(f"/models/{model_id}", headers=ann.headers).json()
    assert (shown["model_id"], shown["job_id"], shown["kind"], shown["base_model"]) == (
        model_id,
        job_id,
        "lora",
        "tiny-llama",
    )
    listed = api.client.get(f"/models/{ann.user_id}/list", headers=ann.headers).json()["models"]
    assert [m["model_id"] for m in listed] == [model_id]


def test_download_is_a_tar_with_its_size_and_sha256_announced(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    reply = api.client.get(f"/models/{model_id}/download", headers=ann.headers)
    assert reply.status_code == 200
    body = reply.content
    assert int(reply.headers["x-content-size"]) == int(reply.headers["content-length"]) == len(body)
    assert reply.headers["x-content-sha256"] == hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert got == FILES  # the metadata view is not part of the weights
    again = api.client.get(f"/models/{model_id}/download", headers=ann.headers)
    assert again.content == body and again.headers["x-content-sha256"] == reply.headers["x-content-sha256"]


def test_delete_removes_weights_and_the_model(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    reply = api.client.delete(f"/models/{model_id}", headers=ann.headers)
    assert reply.status_code == 200 and reply.json() == {"id": model_id, "status": "deleted"}
    left = list(api.rt.bucket.list(f"users/{ann.user_id}/models/{model_id}/"))
    assert left == [f"users/{ann.user_id}/models/{model_id}/metadata.json"]
    for path in (f"/models/{model_id}", f"/models/{model_id}/download"):
        assert api.client.get(path, headers=ann.headers).status_code == 404
    assert api.client.get(f"/models/{ann.user_id}/list", headers=ann.headers).json()["models"] == []


def test_delete_while_a_job_trains_on_it_is_409(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    dataset_id = api.upload(ann)["dataset_id"]
    app = api.rt.user_app(ann.user_id)
    follow_up = app.submit_job(
        base_model=model_id, dataset_id=dataset_id, config={}, gpu_type="cpu", gpu_count=1, at=api.rt.clock()
    )
    api.settle(ann)
    reply = api.client.delete(f"/models/{model_id}", headers=ann.headers)
    assert reply.status_code == 409 and follow_up in reply.json()["error"]["message"]
    assert api.client.get(f"/models/{model_id}/download", headers=ann.headers).status_code == 200


def test_head_on_the_download_answers_its_headers_without_the_body(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    got = api.client.get(f"/models/{model_id}/download", headers=ann.headers)
    head = api.client.head(f"/models/{model_id}/download", headers=ann.headers)
    assert head.status_code == 200 and head.content == b""
    announced = (
        "content-type",
        "content-length",
        "x-content-size",
        "x-content-sha256",
        "content-disposition",
    )
    assert {h: head.headers[h] for h in announced} == {h: got.headers[h] for h in announced}
    assert api.client.head("/models/mdl_nope/download", headers=ann.headers).status_code == 404
