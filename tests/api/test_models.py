"""Models: show, list, download as a verified tar, delete (409 while a job builds on it)."""

from __future__ import annotations

import hashlib
import io
import json
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
    card = got.pop("weights/README.md").decode()
    adapter = json.loads(got.pop("weights/adapter_config.json"))
    expected = dict(FILES)
    del expected["weights/adapter_config.json"]
    assert got == expected  # the metadata view is not part of the weights
    assert adapter == {"r": 8, "base_model_name_or_path": "tiny-llama"}  # tiny-llama is on no hub
    assert model_id in card and "tiny-llama" in card and "--with-base" in card and "users/" not in card
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


def _members(body: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_show_reports_the_downloads_digest(api: Api, ann: User) -> None:
    """One digest: what ``model show`` says is what ``sha256sum`` of the download gives."""
    _, model_id = finished_model(api, ann)
    shown = api.client.get(f"/models/{model_id}", headers=ann.headers).json()
    body = api.client.get(f"/models/{model_id}/download", headers=ann.headers).content
    assert shown["sha256"] == hashlib.sha256(body).hexdigest() and shown["size_bytes"] == len(body)
    assert shown["weights_sha256"] == "0" * 64  # the manifest's digest, as the runner recorded it


def test_the_download_updates_its_manifest_and_drops_server_paths(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    root = f"users/{ann.user_id}/models/{model_id}"
    config = {"weights": f"{root}/weights/", "training_config": {"epochs": 1}, "base_model": "tiny-llama"}
    api.rt.bucket.write(f"{root}/config.json", json.dumps(config).encode())
    manifest = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name.removeprefix('weights/')}\n"
        for name, data in sorted(FILES.items())
        if name.startswith("weights/")
    )
    api.rt.bucket.write(f"{root}/weights/SHA256SUMS", manifest.encode())
    got = _members(api.client.get(f"/models/{model_id}/download", headers=ann.headers).content)
    assert "weights" not in json.loads(got["config.json"]) and root not in got["weights/README.md"].decode()
    sums = dict(reversed(line.split("  ")) for line in got["weights/SHA256SUMS"].decode().splitlines())
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors"):
        assert sums[name] == hashlib.sha256(got[f"weights/{name}"]).hexdigest(), name
    assert '"epochs": 1' in got["weights/README.md"].decode()


def test_with_base_carries_the_base_model(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    path = f"/models/{model_id}/download"
    assert api.client.get(path, params={"with_base": "true"}, headers=ann.headers).status_code == 409
    api.rt.bucket.write("base-models/tiny-llama/config.json", b"{}")
    api.rt.bucket.write("base-models/tiny-llama/.tune-base-model.json", b"{}")
    reply = api.client.get(path, params={"with_base": "true"}, headers=ann.headers)
    assert reply.status_code == 200
    got = _members(reply.content)
    assert got["base/config.json"] == b"{}" and "base/.tune-base-model.json" not in got
    assert json.loads(got["weights/adapter_config.json"])["base_model_name_or_path"] == "base"


def test_an_adapter_of_a_hub_base_names_the_hub_id(api: Api, ann: User) -> None:
    """A base the catalogue takes from the hub: the downloaded adapter config and card name its hub id,
    so ``AutoPeftModelForCausalLM.from_pretrained`` finds the base anywhere (no server path, no
    catalogue name)."""
    _, model_id = finished_model(api, ann, base_model="qwen2_5-0_5b")
    got = _members(api.client.get(f"/models/{model_id}/download", headers=ann.headers).content)
    adapter = json.loads(got["weights/adapter_config.json"])
    assert adapter["base_model_name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    card = got["weights/README.md"].decode()
    assert "base_model: Qwen/Qwen2.5-0.5B-Instruct" in card and "users/" not in card


def test_the_download_ships_the_runs_tensorboard_event_files(api: Api, ann: User, tmp_path) -> None:
    """The trainer writes its scalars under the model's ``runs/``; the archive holds them, and
    TensorBoard reads the train loss points back from the downloaded file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path / "written"))
    for step, loss in [(1, 2.5), (2, 1.75), (3, 1.25)]:
        value = summary_pb2.Summary.Value(tag="train/loss", simple_value=loss)
        summary = summary_pb2.Summary(value=[value])
        writer.add_event(event_pb2.Event(step=step, wall_time=0.0, summary=summary))
    writer.close()
    (written,) = (tmp_path / "written").iterdir()
    _, model_id = finished_model(api, ann)
    weights = api.rt.user_app(ann.user_id).get_model(model_id).weights_prefix
    name = "runs/events.out.tfevents.from-step-00000000"
    api.rt.bucket.write(weights + name, written.read_bytes())

    body = api.client.get(f"/models/{model_id}/download", headers=ann.headers).content
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(tmp_path / "downloaded", filter="data")
    runs = tmp_path / "downloaded" / "weights" / "runs"
    assert [p.name for p in runs.iterdir()] == [name.split("/")[1]]
    points = EventAccumulator(str(runs)).Reload().Scalars("train/loss")
    assert [(p.step, p.value) for p in points] == [(1, 2.5), (2, 1.75), (3, 1.25)]
