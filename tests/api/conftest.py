"""Fixtures of the API tests: a real app on a local bucket, driven through Litestar's test client.

``api`` is a bootstrapped platform (default prices, the base-model catalogue,
an admin) with helpers to make users, log in, upload datasets and start jobs.
Nothing is faked: the real applications, event store, projector and views run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

os.environ.setdefault("LITESTAR_WARN_IMPLICIT_SYNC_TO_THREAD", "0")

from api.app import create_app
from api.services import AccountService
from domain.model import ModelWeights
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from runtime.settings import Settings

SECRET = "test-secret-for-the-api-tests-0123456789"


def chat_lines(n: int = 12, *, start: int = 0) -> bytes:
    """``n`` valid chat examples as JSONL."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]
        }
        for i in range(start, start + n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@dataclass
class User:
    user_id: str
    email: str
    password: str
    headers: dict[str, str]


class Api:
    """The app under test and shortcuts for the steps most tests share."""

    def __init__(self, settings: Settings, runtime: Runtime, client: TestClient[Any]) -> None:
        self.settings = settings
        self.rt = runtime
        self.client = client
        self._n = 0

    def login(self, email: str, password: str) -> dict[str, str]:
        reply = self.client.post("/auth/login", json={"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        return {"Authorization": f"Bearer {reply.json()['token']}"}

    def user(self, name: str | None = None, *, role: str = "user") -> User:
        self._n += 1
        email = f"{name or f'user{self._n}'}@example.com"
        password = f"pw-{self._n}-correct horse"
        user_id = AccountService(self.rt).create_user(email, password, role)
        return User(user_id, email, password, self.login(email, password))

    def upload(self, user: User, data: bytes | None = None, filename: str = "train.jsonl") -> dict[str, Any]:
        reply = self.client.post(
            f"/datasets/{user.user_id}/upload",
            params={"filename": filename},
            content=chat_lines() if data is None else data,
            headers={**user.headers, "Content-Type": "application/octet-stream"},
        )
        assert reply.status_code == 201, reply.text
        return reply.json()  # type: ignore[no-any-return]

    def start(self, user: User, dataset_id: str, **body: Any) -> Any:
        payload = {"base_model": "tiny-llama", "dataset_id": dataset_id, "config": {"epochs": 1}, **body}
        return self.client.post(f"/fine-tune/{user.user_id}/start", json=payload, headers=user.headers)

    def job(self, user: User, dataset_id: str | None = None) -> str:
        """A submitted job of ``user`` (on a fresh dataset unless one is given)."""
        dataset_id = dataset_id or self.upload(user)["dataset_id"]
        reply = self.start(user, dataset_id)
        assert reply.status_code == 201, reply.text
        return reply.json()["job_id"]  # type: ignore[no-any-return]

    def settle(self, user: User) -> None:
        """After a command sent straight to the domain (as a runner would), wait for the views."""
        self.rt.committed(f"users/{user.user_id}")


FILES = {
    "weights/adapter_config.json": b'{"r": 8}',
    "weights/adapter_model.safetensors": bytes(range(256)) * 1000,
    "config.json": b'{"model_type": "llama"}',
    "weights/" + "deep/" * 30 + "long-name.txt": b"a path longer than 100 characters",
}


def finished_model(api: Api, user: User, *, base_model: str | None = None) -> tuple[str, str]:
    """A job that ran and wrote its weights; returns (job_id, model_id). With ``base_model``, the job is
    submitted straight to the domain on that catalogue base (one the API would not start here, e.g. a
    hub base while the hub is off)."""
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    if base_model is None:
        job_id = api.job(user)
    else:
        dataset_id = api.upload(user)["dataset_id"]
        job_id = app.submit_job(
            base_model=base_model, dataset_id=dataset_id, config={}, gpu_type="cpu", gpu_count=1, at=now
        )
    model_id = app.get_job(job_id).model_id
    root = f"users/{user.user_id}/models/{model_id}"
    for name, data in FILES.items():
        api.rt.bucket.write(f"{root}/{name}", data)
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    weights = ModelWeights(
        kind="lora",
        weights_prefix=f"{root}/weights/",
        sha256="0" * 64,
        size_bytes=1234,
        metrics={"loss": 0.5},
    )
    app.mark_succeeded(job_id, now, metrics={"loss": 0.5}, weights=weights)
    api.settle(user)
    return job_id, model_id


TEST_CLUSTER = {"cpu": 1, "a100-80gb": 8, "h100-80gb": 8, "h200": 8}
"""What the API tests' platform offers: the GPU types their jobs are billed on, as an operator declares
a cluster no dispatcher of this process probes (``tune admin hardware set``)."""


def declare_cluster(runtime: Runtime, offers: dict[str, int] | None = None) -> None:
    """The operator's offer of ``offers`` (default ``TEST_CLUSTER``), through the platform command the
    dispatcher uses too; the submit check then accepts those jobs."""
    runtime.platform.offer_hardware("operator", TEST_CLUSTER if offers is None else offers, runtime.clock())
    runtime.committed("platform")


def make_settings(home: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "home": home,
        "bucket_url": f"file://{home / 'bucket'}?fsync=0",  # not durable: API tests need no power-loss safety
        "jwt_secret": SECRET,
        "rate_limit_per_minute": 100_000,
        "max_upload_bytes": 1 << 20,
        **overrides,
    }
    return Settings(**fields)


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    runtime = Runtime(api_settings)
    bootstrap(runtime)
    declare_cluster(runtime)
    with TestClient(create_app(api_settings, runtime=runtime)) as client:
        yield Api(api_settings, runtime, client)


@pytest.fixture
def ann(api: Api) -> User:
    return api.user("ann")


@pytest.fixture
def bob(api: Api) -> User:
    return api.user("bob")


@pytest.fixture
def world(api: Api, ann: User) -> dict[str, str]:
    """Ann's ids: a finished job and its model, a validated dataset and an API key."""
    job_id, model_id = finished_model(api, ann)
    dataset_id = api.upload(ann)["dataset_id"]
    key_id = api.client.post("/keys", json={"name": "world"}, headers=ann.headers).json()["key_id"]
    return {
        "user_id": ann.user_id,
        "job_id": job_id,
        "model_id": model_id,
        "dataset_id": dataset_id,
        "key_id": key_id,
        "file_id": dataset_id,  # /v1/files: a file is a dataset
        "fine_tuning_job_id": job_id,  # /v1/fine_tuning/jobs: one job, two doors
    }
