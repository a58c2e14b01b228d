"""``api.schemas`` is the CLI's only server-side import: it must stay free of server modules."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from api import schemas

SERVER_SIDE = ("litestar", "domain", "storage", "projections", "runners", "eventsourcing", "api.app")


def test_importing_the_schemas_pulls_in_no_server_module() -> None:
    code = "import sys, api.schemas; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in SERVER_SIDE or m == "api.app"]


def test_every_exported_name_is_a_struct() -> None:
    for name in schemas.__all__:
        assert issubclass(getattr(schemas, name), msgspec.Struct), name


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (
            schemas.StartJobRequest,
            {"base_model": "tiny-llama", "dataset_id": "ds_1", "config": "epochs: 1\n"},
        ),
        (schemas.StartJobRequest, {"base_model": "m", "dataset_id": "d", "config": {"lora": {"r": 4}}}),
        (schemas.BudgetRequest, {"monthly_limit_usd_micros": None}),
        (schemas.LoginRequest, {"email": "a@b.c", "password": "x"}),
    ],
)
def test_requests_round_trip(cls: type[msgspec.Struct], data: dict) -> None:
    value = msgspec.json.decode(msgspec.json.encode(data), type=cls)
    assert msgspec.json.decode(msgspec.json.encode(value), type=cls) == value


def test_requests_refuse_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(
            b'{"base_model": "m", "dataset_id": "d", "modle": 1}', type=schemas.StartJobRequest
        )


def test_responses_accept_newer_views() -> None:
    """A view with fields this client does not know yet still decodes (forward compatible)."""
    status = msgspec.json.decode(
        b'{"job_id": "j", "status": "running", "new_field": [1]}', type=schemas.JobStatus
    )
    assert (status.job_id, status.status, status.step) == ("j", "running", 0)
