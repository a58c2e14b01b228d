"""``start_from``: a job that starts from a checkpoint or a model of the caller's (issue 14 part 5)."""

from __future__ import annotations

from typing import Any

import pytest

from storage import layout
from tests.api.conftest import Api, User, finished_model


@pytest.fixture
def dataset(api: Api, ann: User) -> str:
    return api.upload(ann)["dataset_id"]  # type: ignore[no-any-return]


def with_checkpoints(api: Api, user: User, dataset: str, *steps: int, **body: Any) -> str:
    """A running job of ``user`` with a checkpoint in the bucket at each of ``steps``."""
    reply = api.start(user, dataset, **body)
    assert reply.status_code == 201, reply.text
    job_id: str = reply.json()["job_id"]
    app, now = api.rt.user_app(user.user_id), api.rt.clock
    app.queue_job(job_id, now())
    app.start_job(job_id, 1, now())
    for step in steps:
        prefix = layout.attempt_checkpoint_prefix(user.user_id, job_id, 1, step)
        api.rt.bucket.write(prefix + "adapter_model.safetensors", b"w")
        app.save_checkpoint(job_id, 1, step, prefix, now())
    api.settle(user)
    return job_id


def refused(reply: Any, status: int) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["where"] == "start_from", error
    return str(error["message"])


def test_a_job_started_from_a_model_records_it(api: Api, ann: User, dataset: str) -> None:
    _, model_id = finished_model(api, ann)
    reply = api.start(ann, dataset, start_from=model_id)

    assert reply.status_code == 201, reply.text
    point = {"kind": "model", "id": model_id, "path": layout.weights_prefix(ann.user_id, model_id)}
    assert reply.json()["start_from"] == point
    job_id = reply.json()["job_id"]
    status = api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()
    assert status["start_from"] == point
    assert api.rt.user_app(ann.user_id).get_job(job_id).start_from == point
    events = api.client.get(f"/fine-tune/{job_id}/events", headers=ann.headers).json()["events"]
    assert events[0]["type"] == "Submitted" and events[0]["data"]["start_from"] == point


def test_a_job_without_start_from_shows_none(api: Api, ann: User, dataset: str) -> None:
    job_id = api.job(ann, dataset)
    assert "start_from" not in api.rt.view_json(layout.job_status(ann.user_id, job_id))  # type: ignore[operator]
    assert api.rt.user_app(ann.user_id).get_job(job_id).start_from is None


def test_a_checkpoint_id_names_its_step_and_a_job_id_its_latest_usable_checkpoint(
    api: Api, ann: User, dataset: str
) -> None:
    source = with_checkpoints(api, ann, dataset, 5, 10)
    folder = layout.attempt_checkpoint_prefix(ann.user_id, source, 1, 5)
    reply = api.start(ann, dataset, start_from=f"{source}:5", dry_run=True)
    assert reply.status_code == 200, reply.text
    assert reply.json()["start_from"] == {"kind": "checkpoint", "id": f"{source}:5", "path": folder}

    api.rt.bucket.delete_prefix(layout.attempt_checkpoint_prefix(ann.user_id, source, 1, 10))  # pruned
    reply = api.start(ann, dataset, start_from=source)
    assert reply.status_code == 201, reply.text
    assert reply.json()["start_from"]["id"] == f"{source}:5"
    assert "usable steps: 5" in refused(api.start(ann, dataset, start_from=f"{source}:10"), 404)


def test_another_users_checkpoint_or_model_is_not_found(api: Api, ann: User, bob: User, dataset: str) -> None:
    source = with_checkpoints(api, ann, dataset, 5)
    _, model_id = finished_model(api, ann)
    bobs = api.upload(bob)["dataset_id"]
    for ref in (f"{source}:5", source, model_id):
        assert f"{ref.partition(':')[0]} to start from" in refused(api.start(bob, bobs, start_from=ref), 404)


@pytest.mark.parametrize(
    ("ref", "status"),
    [("job_0123456789abcdef:5", 404), ("mdl_0123456789abcdef", 404), ("job_x:five", 400), ("a/b", 400)],
)
def test_an_unknown_or_malformed_start_point_is_refused(
    api: Api, ann: User, dataset: str, ref: str, status: int
) -> None:
    refused(api.start(ann, dataset, start_from=ref), status)


def test_a_deleted_model_is_not_found(api: Api, ann: User, dataset: str) -> None:
    _, model_id = finished_model(api, ann)
    assert api.client.delete(f"/models/{model_id}", headers=ann.headers).status_code == 200
    refused(api.start(ann, dataset, start_from=model_id), 404)


def test_a_start_point_of_another_base_model_is_refused(api: Api, ann: User, dataset: str) -> None:
    _, model_id = finished_model(api, ann)  # on tiny-llama
    message = refused(api.start(ann, dataset, base_model="smollm2-135m", start_from=model_id), 400)
    assert "trained on base model tiny-llama, not smollm2-135m" in message


def test_a_start_point_of_another_method_is_refused(api: Api, ann: User, dataset: str) -> None:
    _, model_id = finished_model(api, ann)  # a LoRA adapter
    message = refused(api.start(ann, dataset, start_from=model_id, config={"method": "full"}), 400)
    assert "holds a LoRA adapter; a full job cannot start from it" in message


def test_the_adapter_shape_is_the_start_points(api: Api, ann: User, dataset: str) -> None:
    """A config without lora takes the start point's; one that asks another shape is refused."""
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj"]}
    source = with_checkpoints(api, ann, dataset, 5, config={"epochs": 1, "lora": lora})

    reply = api.start(ann, dataset, start_from=source, config={"epochs": 2}, dry_run=True)
    assert reply.status_code == 200, reply.text
    assert reply.json()["config"]["lora"] == lora and reply.json()["config"]["epochs"] == 2

    dropout = {**lora, "dropout": 0.1}  # not the adapter's shape: the new job's own
    reply = api.start(ann, dataset, start_from=source, config={"lora": dropout}, dry_run=True)
    assert reply.status_code == 200, reply.text
    message = refused(api.start(ann, dataset, start_from=source, config={"lora": {"r": 8}}), 400)
    assert "r 16, alpha 32" in message and "this config asks r 8" in message
