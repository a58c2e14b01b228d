"""Dataset upload (streamed, validated, size- and quota-limited), show, list and delete."""

from __future__ import annotations

import gzip
import hashlib
import json

import msgspec
import pytest

from tests.api.conftest import Api, User, chat_lines


def names(api: Api, prefix: str) -> list[str]:
    return list(api.rt.bucket.list(prefix))


def test_a_valid_upload_is_stored_raw_processed_and_described(api: Api, ann: User) -> None:
    data = chat_lines(12)
    ds = api.upload(ann, data, filename="my data.jsonl")
    assert ds["status"] == "validated" and ds["rows"] == 12 and ds["format"] == "chat"
    assert ds["size_bytes"] == len(data) and ds["sha256"] == hashlib.sha256(data).hexdigest()
    assert ds["stats"]["examples"] == 12 and ds["errors"] == []
    root = f"users/{ann.user_id}/data/{ds['dataset_id']}"
    assert api.rt.bucket.read(f"{root}/raw/my data.jsonl") == data
    processed = api.rt.bucket.read(f"{root}/processed/train.jsonl").splitlines()
    assert len(processed) == 12 and json.loads(processed[0])["messages"][0]["role"] == "user"
    meta = json.loads(api.rt.bucket.read(f"{root}/metadata.json"))
    assert (meta["rows"], meta["size_bytes"], meta["sha256"], meta["format"]) == (
        12,
        len(data),
        ds["sha256"],
        "chat",
    )
    assert meta["stats"]["examples"] == 12
    # the next read shows it at once
    shown = api.client.get(f"/datasets/{ds['dataset_id']}", headers=ann.headers).json()
    assert shown["status"] == "validated"
    listed = api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"]
    assert [d["dataset_id"] for d in listed] == [ds["dataset_id"]]


def test_a_bad_upload_is_rejected_with_each_error_on_its_line(api: Api, ann: User) -> None:
    lines = chat_lines(12).splitlines(keepends=True)
    lines[3] = b"{not json\n"
    lines[7] = b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    ds = api.upload(ann, b"".join(lines))
    assert ds["status"] == "rejected"
    by_line = {e["line"]: e["message"] for e in ds["errors"]}
    assert set(by_line) == {4, 8}
    assert "JSON" in by_line[4] and "assistant" in by_line[8]
    root = f"users/{ann.user_id}/data/{ds['dataset_id']}"
    assert names(api, f"{root}/") == [f"{root}/metadata.json"]  # the report only: no raw, no processed
    shown = api.client.get(f"/datasets/{ds['dataset_id']}", headers=ann.headers).json()
    assert shown["status"] == "rejected" and len(shown["errors"]) == 2


def test_a_line_nested_1000_deep_is_a_line_error_and_nothing_stays_uploaded(api: Api, ann: User) -> None:
    lines = chat_lines(12).splitlines(keepends=True)
    lines[2] = b"[" * 1000 + b"]" * 1000 + b"\n"
    ds = api.upload(ann, b"".join(lines))
    assert ds["status"] == "rejected"
    assert [e["line"] for e in ds["errors"]] == [3] and "nested deeper" in ds["errors"][0]["message"]
    root = f"users/{ann.user_id}/data/{ds['dataset_id']}"
    assert names(api, f"{root}/") == [f"{root}/metadata.json"]
    listed = api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"]
    assert [d["status"] for d in listed] == ["rejected"]


def test_a_failure_while_processing_records_nothing_and_leaves_no_object(
    api: Api, ann: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr("api.services.datasets.process_dataset", broken)
    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=chat_lines(12), headers=ann.headers)
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal"
    assert names(api, f"users/{ann.user_id}/data/") == []
    assert api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"] == []


def test_a_file_level_error_is_line_0(api: Api, ann: User) -> None:
    ds = api.upload(ann, chat_lines(3))
    assert ds["status"] == "rejected"
    assert [e["line"] for e in ds["errors"]] == [0]


def test_too_large_is_413_and_stores_nothing(api: Api, ann: User) -> None:
    big = chat_lines(20_000)
    assert len(big) > api.settings.max_upload_bytes
    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=big, headers=ann.headers)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: the limit holds while streaming
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=chunks(), headers=ann.headers)
    assert reply.status_code == 413
    assert names(api, f"users/{ann.user_id}/data/") == []
    assert api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"] == []


def test_the_storage_quota_is_403(api: Api, ann: User) -> None:
    first = api.upload(ann)
    api.rt.platform.set_quota(ann.user_id, 2, first["size_bytes"] + 100, api.rt.clock())
    api.rt.committed("platform")
    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=chat_lines(12), headers=ann.headers)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "quota_exceeded" and "quota" in reply.json()["error"]["message"]

    def chunks():  # no Content-Length: the quota holds while streaming
        yield chat_lines(12)

    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=chunks(), headers=ann.headers)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "quota_exceeded"
    assert len(api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"]) == 1


def test_the_upload_documents_its_quota_and_size_refusals(api: Api) -> None:
    schema = api.client.get("/schema/openapi.json").json()
    responses = schema["paths"]["/datasets/{user_id}/upload"]["post"]["responses"]
    assert "quota_exceeded" in responses["403"]["description"]
    assert "too_large" in responses["413"]["description"]


def test_a_rejected_dataset_keeps_its_report_but_not_its_bytes_nor_its_quota(api: Api, ann: User) -> None:
    size = len(chat_lines(12))
    api.rt.platform.set_quota(ann.user_id, 2, size + 100, api.rt.clock())
    api.rt.committed("platform")
    bad = chat_lines(12).replace(b'"user"', b'"bots"')
    rejected = api.upload(ann, bad)
    assert rejected["status"] == "rejected" and rejected["size_bytes"] == len(bad) == size
    accepted = api.upload(ann)  # the rejected upload held no quota
    assert accepted["status"] == "validated"
    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=chat_lines(12), headers=ann.headers)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "quota_exceeded"
    shown = api.client.get(f"/datasets/{rejected['dataset_id']}", headers=ann.headers).json()
    assert shown["status"] == "rejected" and shown["errors"]
    assert api.client.delete(f"/datasets/{rejected['dataset_id']}", headers=ann.headers).status_code == 200


def test_an_empty_upload_is_400(api: Api, ann: User) -> None:
    reply = api.client.post(f"/datasets/{ann.user_id}/upload", content=b"", headers=ann.headers)
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "body"


def test_the_filename_cannot_climb_out(api: Api, ann: User) -> None:
    ds = api.upload(ann, filename="../../etc/passwd.jsonl")
    assert ds["filename"] == "passwd.jsonl"
    assert names(api, f"users/{ann.user_id}/data/{ds['dataset_id']}/raw/")[0].endswith("/raw/passwd.jsonl")


def test_a_filename_with_control_characters_is_400(api: Api, ann: User) -> None:
    reply = api.client.post(
        f"/datasets/{ann.user_id}/upload",
        params={"filename": "a\x07b.jsonl"},
        content=b"x",
        headers=ann.headers,
    )
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "filename"


@pytest.mark.parametrize("name", ["evil\u202elmth.jsonl", "a\u2067b.jsonl", "zero\u200bwidth", "c1\x85x"])
def test_a_filename_with_bidi_or_invisible_characters_is_400_and_stores_nothing(
    api: Api, ann: User, name: str
) -> None:
    path = f"/datasets/{ann.user_id}/upload"
    reply = api.client.post(path, params={"filename": name}, content=chat_lines(), headers=ann.headers)
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "filename"
    assert "invisible" in reply.json()["error"]["message"]
    assert names(api, f"users/{ann.user_id}/data/") == []


def test_delete_removes_the_files_and_the_dataset(api: Api, ann: User) -> None:
    ds = api.upload(ann)["dataset_id"]
    reply = api.client.delete(f"/datasets/{ds}", headers=ann.headers)
    assert reply.status_code == 200 and reply.json() == {"id": ds, "status": "deleted"}
    root = f"users/{ann.user_id}/data/{ds}"
    assert names(api, f"{root}/raw/") == [] and names(api, f"{root}/processed/") == []
    assert api.client.get(f"/datasets/{ds}", headers=ann.headers).status_code == 404
    assert api.client.get(f"/datasets/{ann.user_id}/list", headers=ann.headers).json()["datasets"] == []
    assert api.client.delete(f"/datasets/{ds}", headers=ann.headers).status_code == 404


def test_delete_while_a_job_uses_it_is_409_until_the_job_ends(api: Api, ann: User) -> None:
    ds = api.upload(ann)["dataset_id"]
    job_id = api.job(ann, ds)
    reply = api.client.delete(f"/datasets/{ds}", headers=ann.headers)
    assert reply.status_code == 409 and job_id in reply.json()["error"]["message"]
    assert api.rt.bucket.exists(f"users/{ann.user_id}/data/{ds}/processed/train.jsonl")
    assert api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers).status_code == 200
    assert api.client.delete(f"/datasets/{ds}", headers=ann.headers).status_code == 200


def test_delete_is_409_while_an_active_job_validates_on_it_even_paused(api: Api, ann: User) -> None:
    """A validation dataset is in use as the training one is: a paused job's resume evaluates on it."""
    train, valid = api.upload(ann)["dataset_id"], api.upload(ann)["dataset_id"]
    reply = api.start(ann, train, config={"epochs": 1, "validation_dataset_id": valid})
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["job_id"]
    assert api.client.post(f"/fine-tune/{job_id}/pause", headers=ann.headers).status_code == 200
    api.settle(ann)
    assert api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()["status"] == "paused"
    refused = api.client.delete(f"/datasets/{valid}", headers=ann.headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (
        f"dataset {valid} is in use by active job(s) {job_id}; stop them first"
    )
    assert api.rt.bucket.exists(f"users/{ann.user_id}/data/{valid}/processed/train.jsonl")
    assert api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers).status_code == 200
    api.settle(ann)
    assert api.client.delete(f"/datasets/{valid}", headers=ann.headers).status_code == 200


@pytest.mark.slow
def test_a_large_upload_is_never_held_whole_in_memory(api: Api, ann: User) -> None:
    """The body goes from the ASGI receive channel to the bucket chunk by chunk (driven raw: no client)."""
    import tracemalloc

    import anyio

    line = chat_lines(1).replace(b"answer 0", b"answer " + b"x" * 900)
    chunk = line * 64
    chunks = (16 << 20) // len(chunk)
    api.rt.settings = msgspec.structs.replace(api.rt.settings, max_upload_bytes=64 << 20)
    path = f"/datasets/{ann.user_id}/upload"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"filename=big.jsonl",
        "headers": [(b"host", b"t"), (b"authorization", ann.headers["Authorization"].encode())],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
        "root_path": "",
        "state": {},
    }
    sent = 0
    reply: dict[str, object] = {"body": b""}

    async def receive() -> dict[str, object]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            reply["status"] = message["status"]
        elif message["type"] == "http.response.body":
            reply["body"] = reply["body"] + message.get("body", b"")  # type: ignore[operator]

    tracemalloc.start()
    try:
        anyio.run(api.client.app, scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    body = json.loads(reply["body"])  # type: ignore[arg-type]
    assert reply["status"] == 201 and body["status"] == "validated", body
    assert body["size_bytes"] == chunks * len(chunk) > 15 << 20
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a {body['size_bytes'] / 2**20:.0f} MiB upload"


def post_upload(api: Api, user: User, content: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return api.client.post(
        f"/datasets/{user.user_id}/upload",
        params={"filename": "train.jsonl"},
        content=content,
        headers={**user.headers, **headers},
    )


def assert_nothing_stored(api: Api, user: User) -> None:
    assert names(api, f"users/{user.user_id}/data/") == []
    assert api.client.get(f"/datasets/{user.user_id}/list", headers=user.headers).json()["datasets"] == []


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=x",  # curl -F
        "application/x-www-form-urlencoded",  # curl --data-binary without -H
        "application/gzip",
        "application/json",
        "text/plain; charset=latin-1",
    ],
)
def test_an_unsupported_content_type_is_415_naming_what_is_accepted(
    api: Api, ann: User, content_type: str
) -> None:
    reply = post_upload(api, ann, chat_lines(3), **{"Content-Type": content_type})
    assert reply.status_code == 415, reply.text
    error = reply.json()["error"]
    assert error["code"] == "unsupported_media_type" and error["where"] == "Content-Type"
    assert "application/octet-stream" in error["message"] and "application/x-ndjson" in error["message"]
    assert "application/x-ndjson" in reply.headers["accept-post"]
    assert_nothing_stored(api, ann)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/octet-stream",
        "application/jsonl",
        "application/x-ndjson",
        "text/plain; charset=utf-8",
    ],
)
def test_the_accepted_content_types(api: Api, ann: User, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = post_upload(api, ann, chat_lines(), **headers)
    assert reply.status_code == 201 and reply.json()["status"] == "validated", reply.text


def test_a_gzip_body_is_decompressed_while_streaming(api: Api, ann: User) -> None:
    data = chat_lines(40)
    reply = post_upload(api, ann, gzip.compress(data), **{"Content-Encoding": "gzip"})
    assert reply.status_code == 201, reply.text
    ds = reply.json()
    assert ds["status"] == "validated" and ds["rows"] == 40
    assert ds["size_bytes"] == len(data) and ds["sha256"] == hashlib.sha256(data).hexdigest()
    raw = f"users/{ann.user_id}/data/{ds['dataset_id']}/raw/train.jsonl"
    assert api.rt.bucket.read(raw) == data  # the file, not its compressed form
    two_members = gzip.compress(chat_lines(6)) + gzip.compress(chat_lines(6, start=6))
    reply = post_upload(api, ann, two_members, **{"Content-Encoding": "gzip"})
    assert reply.status_code == 201 and reply.json()["rows"] == 12


def test_the_size_limit_counts_decompressed_bytes(api: Api, ann: User) -> None:
    bomb = gzip.compress(b"\n" * (api.settings.max_upload_bytes * 8))
    assert len(bomb) < api.settings.max_upload_bytes // 100
    reply = post_upload(api, ann, bomb, **{"Content-Encoding": "gzip"})
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "too_large"
    assert_nothing_stored(api, ann)


@pytest.mark.parametrize(
    ("content", "headers", "status", "where"),
    [
        (b"\x1f\x8b\x08 not really", {"Content-Encoding": "gzip"}, 400, "body"),
        (gzip.compress(b'{"text": "hi"}\n' * 50)[:-12], {"Content-Encoding": "gzip"}, 400, "body"),
        (gzip.compress(b'{"text": "hi"}\n'), {}, 415, "Content-Encoding"),  # gzip without saying so
        (b'{"text": "hi"}\n', {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
    ids=["not-gzip", "truncated", "undeclared-gzip", "brotli"],
)
def test_bad_or_undeclared_codings_store_nothing(
    api: Api, ann: User, content: bytes, headers: dict[str, str], status: int, where: str
) -> None:
    reply = post_upload(api, ann, content, **headers)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["where"] == where
    assert_nothing_stored(api, ann)
