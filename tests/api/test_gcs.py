"""The same API on Google Cloud Storage (fake-gcs-server): reads go through worker threads there."""

from __future__ import annotations

import hashlib
from pathlib import Path

from litestar.testing import TestClient

from api.app import create_app
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from storage.gcs import GcsBucket
from tests.api.conftest import Api, chat_lines, make_settings


def test_upload_start_and_read_back_on_gcs(tmp_path: Path, gcs_bucket: GcsBucket) -> None:
    settings = make_settings(tmp_path, bucket_url=gcs_bucket.url)
    runtime = Runtime(settings, bucket=gcs_bucket)
    assert not runtime.inline_io
    bootstrap(runtime)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        api = Api(settings, runtime, client)
        ann = api.user("ann")
        data = chat_lines(12)
        ds = api.upload(ann, data)
        assert ds["status"] == "validated" and ds["sha256"] == hashlib.sha256(data).hexdigest()
        raw = f"users/{ann.user_id}/data/{ds['dataset_id']}/raw/train.jsonl"
        assert gcs_bucket.read(raw) == data
        job_id = api.job(ann, ds["dataset_id"])
        status = client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()
        assert status["status"] == "submitted"
        listed = client.get(f"/fine-tune/{ann.user_id}/list", headers=ann.headers).json()["jobs"]
        assert [j["job_id"] for j in listed] == [job_id]
        assert client.get("/billing/usage", headers=ann.headers).status_code == 200
