"""A bucket written by an earlier release is read as before: stored formats are a contract.

``tests/fixtures/bucket-2026-12`` was written by the code as it stood on 2026-12-06 (before the
"one home for each concept" refactor): ``tune serve`` on a local bucket, an admin, ``ada`` with a
validated and a rejected dataset, a tiny-llama LoRA job that succeeded (its model and weights), a
job cancelled while queued, a monthly budget, an a100 price set mid-month, and ``bob``, suspended
with quotas. Checkpoints were left out (their events stay) to keep the fixture small.

Every test works on a copy: the audit replays each partition with today's code and compares the
stored views byte for byte, the API serves the stored views, and a new write extends the old log.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api.conftest import make_settings

FIXTURE = Path(__file__).parents[1] / "fixtures" / "bucket-2026-12"
ADA = "usr_8ab5999d4d544261a03f918e"
BOB = "usr_74fae912b9064cfcad02c85f"
PASSWORD = "pw-123456789"
SUCCEEDED_JOB = "job_7f636c502ffe40b18755b194"
CANCELLED_JOB = "job_ee085c49d6ed4ed2a246555b"
MODEL = "mdl_45bf4fb23577470bbfbc3c97"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
"""The bill of December 2026 is the current month's whenever the test runs."""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "bucket")
    return tmp_path


@pytest.fixture
def client(home: Path) -> Iterator[TestClient[Any]]:
    from api.app import create_app
    from runtime.context import Runtime

    settings = make_settings(home)
    runtime = Runtime(settings, clock=lambda: NOW)
    with TestClient(create_app(settings, runtime=runtime)) as test_client:
        yield test_client


def _login(client: TestClient[Any], email: str) -> dict[str, str]:
    reply = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['token']}"}


def _audit(home: Path, month: str | None = None) -> list[Any]:
    from projections.audit import audit_bucket
    from projections.replay import apps_on, read_events
    from projections.report import check_month
    from storage import LocalBucket

    bucket = LocalBucket(home / "bucket")
    reports: list[Any] = audit_bucket(bucket)
    if month:
        partition = f"users/{ADA}"
        events = (event for _, event in read_events(apps_on(bucket)(partition)))
        reports.append(check_month(bucket, partition, events, month))
    return reports


def test_todays_replay_rebuilds_every_stored_view_byte_for_byte(home: Path) -> None:
    reports = _audit(home)
    assert {r.partition for r in reports} >= {"platform", f"users/{ADA}", f"users/{BOB}"}
    assert [r for r in reports if not r.ok] == []


def test_the_api_serves_the_stored_jobs_models_datasets_and_bill(client: TestClient[Any]) -> None:
    ada = _login(client, "ada@example.com")
    jobs = client.get(f"/fine-tune/{ADA}/list", headers=ada).json()
    states = {job["job_id"]: job["status"] for job in jobs["jobs"]}
    assert states == {SUCCEEDED_JOB: "succeeded", CANCELLED_JOB: "stopped"}

    status = client.get(f"/fine-tune/{SUCCEEDED_JOB}/status", headers=ada).json()
    assert status["status"] == "succeeded" and status["step"] == 6

    models = client.get(f"/models/{ADA}/list", headers=ada).json()["models"]
    assert [m["model_id"] for m in models] == [MODEL]

    datasets = client.get(f"/datasets/{ADA}/list", headers=ada).json()["datasets"]
    assert sorted(d["status"] for d in datasets) == ["rejected", "validated"]

    cost = client.get(f"/billing/job/{SUCCEEDED_JOB}/cost", headers=ada).json()
    usage = client.get("/billing/usage", headers=ada).json()
    assert cost["cost_usd_micros"] == 58
    assert usage["current_period"]["period"] == "2026-12"
    assert usage["current_period"]["total_cost_usd_micros"] == 58
    assert usage["remaining_usd_micros"] == 50_000_000 - 58

    prices = client.get("/billing/pricing", headers=ada).json()
    assert prices["prices"]["a100"]["usd_micros_per_hour"] == 2_750_000


def test_a_suspended_user_of_the_old_bucket_stays_suspended(client: TestClient[Any]) -> None:
    reply = client.post("/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert reply.status_code in (401, 403), reply.text


def test_a_new_write_extends_the_old_log_and_the_audit_stays_clean(
    home: Path, client: TestClient[Any]
) -> None:
    ada = _login(client, "ada@example.com")
    reply = client.put("/billing/budget", json={"monthly_limit_usd_micros": 70_000_000}, headers=ada)
    assert reply.status_code == 200, reply.text
    usage = client.get("/billing/usage", headers=ada).json()
    assert usage["budget"]["monthly_limit_usd_micros"] == 70_000_000
    assert [r for r in _audit(home, month="2026-12") if not r.ok] == []
