"""One error shape on every route: a code, a message, and where it applies; never a 500 for input."""

from __future__ import annotations

import logging

import pytest

from api.body import StrictRequest
from tests.api.conftest import Api, User


def error_of(reply) -> dict:  # type: ignore[no-untyped-def]
    body = reply.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "where"}, body
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_unknown_route_and_method(api: Api, ann: User) -> None:
    reply = api.client.get("/no/such/route", headers=ann.headers)
    assert reply.status_code == 404 and error_of(reply)["code"] == "not_found"
    reply = api.client.delete("/billing/usage", headers=ann.headers)
    assert reply.status_code == 405 and error_of(reply)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/fine-tune/bad.id/status", "job_id"),
        ("/fine-tune/-x/events", "job_id"),
        (f"/fine-tune/{'j' * 65}/status", "job_id"),
        ("/models/a%20b", "model_id"),
        ("/datasets/%2e%2e", "dataset_id"),
        ("/billing/job/x$y/cost", "job_id"),
    ],
)
def test_path_ids_are_checked_first(api: Api, ann: User, path: str, where: str) -> None:
    reply = api.client.get(path, headers=ann.headers)
    assert reply.status_code == 400
    assert error_of(reply) | {"message": ""} == {"code": "invalid", "message": "", "where": where}


def test_body_validation_names_the_field(api: Api, ann: User) -> None:
    reply = api.client.put("/billing/budget", json={"monthly_limit_usd_micros": 0}, headers=ann.headers)
    assert reply.status_code == 400
    assert error_of(reply)["where"] == "monthly_limit_usd_micros"
    reply = api.client.put("/billing/budget", json={"thresholds_pct": [50]}, headers=ann.headers)
    assert reply.status_code == 400 and "monthly_limit_usd_micros" in error_of(reply)["message"]


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b"null", b'{"email": 1, "password": "x"}', b'{"email": "a@b.c"}', b"\xff\xfe"],
)
def test_garbage_bodies_are_400_not_500(api: Api, body: bytes) -> None:
    reply = api.client.post("/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    error_of(reply)


def test_a_domain_refusal_keeps_its_code(api: Api, ann: User) -> None:
    job_id = api.job(ann)
    assert api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers).status_code == 200
    reply = api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers)
    assert reply.status_code == 409 and error_of(reply)["code"] == "conflict"


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/auth/login", DEEP),
        ("POST", "/auth/login", b'{"email": "a@b.c", "password": "x", "x": ' + DEEP + b"}"),
        ("PUT", "/billing/budget", DEEP),
        ("POST", "/fine-tune/{user_id}/start", DEEP),
        (
            "POST",
            "/fine-tune/{user_id}/start",
            b'{"base_model": "m", "dataset_id": "d", "config": {"a": ' + DEEP + b"}}",
        ),
    ],
)
def test_json_nested_1000_deep_is_400_and_logs_no_traceback(
    api: Api, ann: User, caplog: pytest.LogCaptureFixture, method: str, path: str, body: bytes
) -> None:
    headers = {**ann.headers, "Content-Type": "application/json"}
    with caplog.at_level(logging.INFO):
        reply = api.client.request(method, path.format(user_id=ann.user_id), content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    assert error_of(reply) | {"message": ""} == {"code": "invalid", "message": "", "where": "body"}
    assert "nested deeper than 64 levels" in error_of(reply)["message"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        ("PUT", "/billing/budget", {"monthly_limit_usd_micros": "100"}, "monthly_limit_usd_micros"),
        ("PUT", "/billing/budget", {"monthly_limit_usd_micros": 1.5}, "monthly_limit_usd_micros"),
        (
            "PUT",
            "/billing/budget",
            {"monthly_limit_usd_micros": 100, "thresholds_pct": ["50"]},
            "thresholds_pct[0]",
        ),
        (
            "PUT",
            "/billing/budget",
            {"monthly_limit_usd_micros": 100, "thresholds_pct": [0]},
            "thresholds_pct[0]",
        ),
        ("PUT", "/billing/budget", {"monthly_limit_usd_micros": True}, "monthly_limit_usd_micros"),
        ("PUT", "/billing/budget", {"monthly_limit_usd_micros": 1, "extra": 1}, "extra"),
        (
            "POST",
            "/fine-tune/{user_id}/start",
            {"base_model": "m", "dataset_id": "d", "dry_run": "true"},
            "dry_run",
        ),
        ("POST", "/fine-tune/{user_id}/start", {"base_model": "m", "dataset_id": "d", "force": 1}, "force"),
        ("POST", "/fine-tune/{user_id}/start", {"base_model": 7, "dataset_id": "d"}, "base_model"),
        ("POST", "/fine-tune/{user_id}/start", {"dataset_id": "d"}, "base_model"),
        ("POST", "/auth/login", {"email": "ann@example.com", "password": 12345678}, "password"),
    ],
)
def test_strings_are_not_coerced_into_typed_fields(
    api: Api, ann: User, method: str, path: str, body: dict, where: str
) -> None:
    reply = api.client.request(method, path.format(user_id=ann.user_id), json=body, headers=ann.headers)
    assert reply.status_code == 400, reply.text
    assert error_of(reply) | {"message": ""} == {"code": "invalid", "message": "", "where": where}
    assert api.client.get("/billing/usage", headers=ann.headers).json()["budget"] is None  # nothing was set


def test_well_typed_bodies_still_pass(api: Api, ann: User) -> None:
    body = {"monthly_limit_usd_micros": 100, "thresholds_pct": [50]}
    reply = api.client.put("/billing/budget", json=body, headers=ann.headers)
    assert reply.status_code == 200 and reply.json()["thresholds_pct"] == [50]
    body = {"monthly_limit_usd_micros": 200.0, "thresholds_pct": [80.0]}  # JSON Schema integers
    reply = api.client.put("/billing/budget", json=body, headers=ann.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["monthly_limit_usd_micros"] == 200 and reply.json()["thresholds_pct"] == [80]
    reply = api.client.put("/billing/budget", json={"monthly_limit_usd_micros": None}, headers=ann.headers)
    assert reply.status_code == 200 and reply.json()["monthly_limit_usd_micros"] is None


def test_every_route_with_a_json_body_decodes_it_strictly(api: Api) -> None:
    handlers = [h for route in api.client.app.routes for h in getattr(route, "route_handlers", [])]
    with_body = [h for h in handlers if h.parsed_data_field is not None]
    assert len(with_body) >= 3  # login, budget, start
    assert all(issubclass(h.resolve_request_class(), StrictRequest) for h in with_body)  # the console's too


def test_where_names_what_the_client_sent(api: Api, ann: User) -> None:
    reply = api.client.get(f"/fine-tune/{ann.user_id}/list", params={"state": "x" * 30}, headers=ann.headers)
    assert reply.status_code == 400 and error_of(reply)["where"] == "state"  # not the handler's job_state
    for body in (b"null", b"[]"):
        reply = api.client.post("/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert error_of(reply)["where"] == "body"  # not Litestar's "data"
    reply = api.client.post("/auth/login", json={"password": "x"})
    assert error_of(reply)["where"] == "email"
    reply = api.client.put("/billing/budget", json={"thresholds_pct": [50]}, headers=ann.headers)
    assert error_of(reply)["where"] == "monthly_limit_usd_micros"


def test_a_missing_body_says_so(api: Api) -> None:
    reply = api.client.post("/auth/login", headers={"Content-Type": "application/json"})
    error = error_of(reply)
    assert reply.status_code == 400 and error["where"] == "body"
    assert "body is missing" in error["message"] and "'data'" not in error["message"]


def test_a_write_onto_a_broken_log_is_503_and_names_nothing_of_the_ledger(
    api: Api, ann: User, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh server on a bucket whose last commit was edited refuses to extend it (issue 12, D1)."""
    from litestar.testing import TestClient

    from api.app import create_app
    from runtime.context import Runtime

    first = api.client.put("/billing/budget", json={"monthly_limit_usd_micros": 5}, headers=ann.headers)
    assert first.is_success
    api.settle(ann)
    events = api.settings.home / "bucket" / "users" / ann.user_id / "events"
    last = sorted(events.glob("*.json"))[-1]
    data = last.read_bytes()
    end = data.rindex(b"}")
    last.write_bytes(data[:end] + b" " + data[end:])  # same JSON, other bytes: another SHA-256

    with TestClient(create_app(api.settings, runtime=Runtime(api.settings))) as fresh:
        logging.getLogger("api").addHandler(caplog.handler)  # the app's logging config stops propagation
        try:
            reply = fresh.put("/billing/budget", json={"monthly_limit_usd_micros": 7}, headers=ann.headers)
        finally:
            logging.getLogger("api").removeHandler(caplog.handler)
    assert reply.status_code == 503, reply.text
    assert error_of(reply)["code"] == "ledger_integrity" and ann.user_id not in reply.text
    assert any("ledger integrity" in r.getMessage() and not r.exc_info for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
