"""The OpenAPI document says what the server does: public routes, the upload's body, every constraint."""

from __future__ import annotations

from typing import Any

import pytest

from api.uploads import MEDIA_TYPES
from domain.job_states import JobState
from tests.api.conftest import Api, User


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    reply = api.client.get("/schema/openapi.json")
    assert reply.status_code == 200
    return reply.json()  # type: ignore[no-any-return]


def test_login_and_health_need_no_token_and_the_rest_do(document: dict[str, Any]) -> None:
    assert document["security"] == [{"BearerToken": []}]
    paths = document["paths"]
    assert paths["/health"]["get"]["security"] == []
    assert paths["/auth/login"]["post"]["security"] == []
    public = ("/health", "/auth/login")
    guarded = [op for path, item in paths.items() if path not in public for op in item.values()]
    assert guarded and all("security" not in op for op in guarded)  # they inherit the bearer requirement


def test_the_upload_declares_its_body_and_415(document: dict[str, Any]) -> None:
    upload = document["paths"]["/datasets/{user_id}/upload"]["post"]
    body = upload["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == set(MEDIA_TYPES)
    assert "application/x-ndjson" in MEDIA_TYPES and "text/plain" in MEDIA_TYPES
    assert body["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
        "minLength": 1,
    }
    assert "Content-Encoding: gzip" in body["description"]
    assert {"403", "413", "415"} <= set(upload["responses"])


def test_constraints_the_server_enforces_are_in_the_document(document: dict[str, Any]) -> None:
    shapes = document["components"]["schemas"]
    thresholds = shapes["BudgetRequest"]["properties"]["thresholds_pct"]
    assert thresholds["items"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert thresholds["uniqueItems"] is True and thresholds["maxItems"] == 10
    assert shapes["LoginRequest"]["properties"]["email"]["format"] == "email"
    for name in ("LoginRequest", "StartJobRequest", "BudgetRequest"):  # unknown fields are refused
        assert shapes[name]["additionalProperties"] is False, name
    parameters = document["paths"]["/fine-tune/{user_id}/list"]["get"]["parameters"]
    (state,) = [p for p in parameters if p["name"] == "state"]
    assert state["in"] == "query" and state["schema"]["enum"] == sorted(JobState)


def test_head_on_the_download_is_documented(document: dict[str, Any]) -> None:
    assert set(document["paths"]["/models/{model_id}/download"]) == {"get", "head"}


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/datasets/x", "DELETE, GET, OPTIONS"),
        ("/models/x", "DELETE, GET, OPTIONS"),
        ("/models/x/download", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_lists_every_method_of_the_route(api: Api, ann: User, path: str, methods: str) -> None:
    reply = api.client.options(path, headers=ann.headers)
    assert reply.status_code == 204 and reply.headers["allow"] == methods
