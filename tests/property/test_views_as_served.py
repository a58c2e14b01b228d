"""Every view the projections write decodes, strictly, into the type the API reads it with.

The projections write the JSON views (``projections.*``); the API reads them back with
``msgspec.json.decode(data, type=...)`` into its response schemas (``api.schemas``) and serves
those. Nothing else ties the two declarations together, so random valid histories (the
drivers of ``tests.property.histories``) are projected and every object written is decoded
with ``strict=True`` into its schema, which must also keep every field the view holds (the API
serves what it decoded: a field the schema lacks would silently vanish from the reply).

A few views are read by the API as plain JSON (``Runtime.view_json``), not through a schema:
user_info.json, users.json, base_models.json and position.json. They are named here so that a
new view must be given its schema (or added to that list) before this test passes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import schemas
from api.services.billing import _StoredBilling as StoredBilling
from domain.applications import PlatformApp, UserApp
from projections.partition import PLATFORM
from storage.memory import MemoryBucket
from tests.property.histories import PlatformDriver, UserDriver, platform_command, play, step, user_command
from views.index import IndexHead, IndexPage

USER = r"users/[^/]+"
SERVED_AS: list[tuple[str, Any]] = [
    (rf"{USER}/metadata/jobs\.json", schemas.JobList),
    (rf"{USER}/jobs/[^/]+/status\.json", schemas.JobStatus),
    (rf"{USER}/metadata/datasets\.json", schemas.DatasetList),
    (rf"{USER}/data/[^/]+/metadata\.json", schemas.Dataset),
    (rf"{USER}/metadata/models\.json", schemas.ModelList),
    (rf"{USER}/models/[^/]+/metadata\.json", schemas.Model),
    (rf"{USER}/metadata/billing\.json", StoredBilling),
    (rf"{USER}/metadata/billing_history\.json", schemas.BillingHistory),
    (rf"({USER}|{PLATFORM})/metadata/gpu_pricing\.json", schemas.Pricing),
    (rf"{USER}/metadata/index/(jobs|datasets|models)/head\.json", IndexHead),  # api.services.pages
    (rf"{USER}/metadata/index/jobs/[0-9]+\.json", IndexPage[schemas.JobRow]),
    (rf"{USER}/metadata/index/datasets/[0-9]+\.json", IndexPage[schemas.DatasetRow]),
    (rf"{USER}/metadata/index/models/[0-9]+\.json", IndexPage[schemas.ModelRow]),
]
READ_AS_JSON = [
    rf"{USER}/metadata/user_info\.json",
    rf"{PLATFORM}/metadata/users\.json",
    rf"{PLATFORM}/metadata/base_models\.json",
    rf"({USER}|{PLATFORM})/metadata/position\.json",
]


def _schema(name: str) -> Any:
    for pattern, schema in SERVED_AS:
        if re.fullmatch(pattern, name):
            return schema
    assert any(re.fullmatch(pattern, name) for pattern in READ_AS_JSON), f"{name}: which schema serves it?"
    return None


def _lost(stored: Any, served: Any, where: str = "") -> list[str]:
    """The fields of ``stored`` (plain JSON) that ``served`` (the same, through the schema) lacks."""
    if isinstance(stored, dict) and isinstance(served, dict):
        return [
            lost
            for key, value in stored.items()
            for lost in (
                [f"{where}.{key}"] if key not in served else _lost(value, served[key], f"{where}.{key}")
            )
        ]
    if isinstance(stored, list) and isinstance(served, list):
        return [
            lost
            for i, (a, b) in enumerate(zip(stored, served, strict=True))
            for lost in _lost(a, b, f"{where}[{i}]")
        ]
    return []


def _check_views(bucket: MemoryBucket) -> None:
    for name in bucket.list(""):
        schema = _schema(name)
        if schema is None:
            continue
        data = bucket.read(name)
        try:
            served = msgspec.json.decode(data, type=schema, strict=True)
        except msgspec.ValidationError as exc:
            raise AssertionError(f"{name} does not decode as {schema.__name__}: {exc}\n{data!r}") from exc
        lost = _lost(msgspec.json.decode(data), msgspec.to_builtins(served))
        assert not lost, f"{name} as {schema.__name__} drops {lost}"


def _run(partition: str, app: Any, driver: Any, commands: list[tuple[tuple[Any, ...], int]]) -> None:
    _check_views(play(partition, app, driver, commands, caught_up=_check_views))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(user_command, step), min_size=20, max_size=120))
def test_user_views_decode_into_their_schemas(commands: list[tuple[tuple[Any, ...], int]]) -> None:
    app = UserApp("u1")
    driver = UserDriver(app)
    d0_validated = [("dataset", "d0", 0)] * 2
    j0_succeeded = [("job", "j0", 0, 1)] * 3 + [("job", "j0", 8, 1)]  # submit, queue, start, succeed
    for setup in (*d0_validated, *j0_succeeded):  # so every history has a model too
        driver(setup, datetime(2024, 1, 30, tzinfo=UTC))
    _run("users/u1", app, driver, commands)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(platform_command, step), min_size=5, max_size=60))
def test_platform_views_decode_into_their_schemas(commands: list[tuple[tuple[Any, ...], int]]) -> None:
    app = PlatformApp()
    _run(PLATFORM, app, PlatformDriver(app), commands)
