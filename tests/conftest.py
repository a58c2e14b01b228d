"""Fixtures every test folder may use: emulators (one per session) and buckets.

``bucket`` runs a test on each backend (``local``, ``gcs``); tests that use
an emulator are marked ``gcs`` / ``pubsub`` automatically. Folder-specific
fixtures belong in that folder's own conftest.py.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
if not os.environ.get("TUNE_HOME"):  # the event store's signing keys (storage.eventstore.ledger) go there
    import tempfile

    os.environ["TUNE_HOME"] = tempfile.mkdtemp(prefix="tune-tests-home-")

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from storage import Bucket, LocalBucket
from tests import emulators

if TYPE_CHECKING:
    from storage.gcs import GcsBucket

_EMULATOR_MARKS = {"fake_gcs": "gcs", "gcs_bucket": "gcs", "pubsub_emulator": "pubsub", "ray_head": "ray"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in _EMULATOR_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    """fake-gcs-server for the whole session; yields its URL and sets STORAGE_EMULATOR_HOST."""
    with emulators.fake_gcs_server() as url, pytest.MonkeyPatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", url)
        yield url


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """A local Ray head for the whole session (``tests.ray_cluster``); yields its Jobs API URL.
    Skipped, saying why, where ray is not importable."""
    from tests.ray_cluster import RayMissing, ray_executable, ray_head

    try:
        ray_executable()
    except RayMissing as exc:
        pytest.skip(str(exc))
    with ray_head() as url:
        yield url


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """The Pub/Sub emulator for the whole session; yields host:port and sets PUBSUB_EMULATOR_HOST."""
    with emulators.pubsub_emulator() as host, pytest.MonkeyPatch.context() as env:
        env.setenv("PUBSUB_EMULATOR_HOST", host)
        yield host


@pytest.fixture
def local_bucket(tmp_path: Path) -> LocalBucket:
    return LocalBucket(tmp_path / "bucket")


@pytest.fixture
def gcs_bucket(fake_gcs: str) -> GcsBucket:
    """A fresh, empty bucket on the session's fake-gcs-server."""
    from storage.gcs import GcsBucket

    name = f"test-{uuid.uuid4().hex[:20]}"
    emulators.create_gcs_bucket(fake_gcs, name)
    return GcsBucket(f"gs://{name}")


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """Each backend in turn: write a test once, run it on both."""
    return request.getfixturevalue(f"{request.param}_bucket")  # type: ignore[no-any-return]
