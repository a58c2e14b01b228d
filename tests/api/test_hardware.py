"""The hardware on offer (``GET /hardware``); a job for hardware nobody offers is refused at submit (422)."""

from __future__ import annotations

from api.services.hardware import HardwareService
from runtime.context import Runtime
from tests.api.conftest import Api, User, declare_cluster, make_settings


def test_hardware_lists_what_is_offered_and_needs_a_token(api: Api, ann: User) -> None:
    assert api.client.get("/hardware").status_code == 401
    reply = api.client.get("/hardware", headers=ann.headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert {(o["gpu_type"], o["gpu_count"]) for o in body["offers"]} == {
        ("cpu", 1),
        ("a100-80gb", 8),
        ("h100-80gb", 8),
        ("h200", 8),
    }
    assert [s["source"] for s in body["sources"]] == ["operator"]


def test_a_job_for_hardware_no_backend_offers_is_422_naming_it_and_what_exists(api: Api, ann: User) -> None:
    dataset = api.upload(ann)["dataset_id"]
    reply = api.start(ann, dataset, config={"epochs": 1, "gpu_type": "t4"})  # priced, but offered nowhere
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "hardware_not_offered" and error["where"] == "gpu_type"
    assert "t4 x1" in error["message"]
    assert "a100-80gb x8, cpu x1, h100-80gb x8, h200 x8" in error["message"]

    reply = api.start(ann, dataset, config={"epochs": 1, "gpu_type": "h200", "gpu_count": 16})
    assert reply.status_code == 422 and reply.json()["error"]["where"] == "gpu_count"
    assert "h200 x16" in reply.json()["error"]["message"]

    reply = api.start(ann, dataset, config={"epochs": 1, "gpu_type": "h200", "gpu_count": 8}, dry_run=True)
    assert reply.status_code == 200, reply.text
    listed = api.client.get(f"/fine-tune/{ann.user_id}/list", headers=ann.headers).json()["jobs"]
    assert listed == []  # nothing was submitted


def test_an_offer_withdrawn_refuses_jobs_from_then_on(api: Api, ann: User) -> None:
    dataset = api.upload(ann)["dataset_id"]
    assert api.start(ann, dataset, config={"epochs": 1, "gpu_type": "a100-80gb"}).status_code == 201
    declare_cluster(api.rt, {})  # the operator's cluster is gone: only what a dispatcher offers remains
    reply = api.start(ann, dataset, config={"epochs": 1, "gpu_type": "a100-80gb"})
    assert reply.status_code == 422 and "offered: nothing" in reply.json()["error"]["message"]


def test_before_any_offer_only_cpu_is_offered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = HardwareService(Runtime(make_settings(tmp_path)))
    assert service.offers() == {"cpu": 1}
    assert service.hardware().sources == []
