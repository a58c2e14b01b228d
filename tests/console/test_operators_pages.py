"""The console's operators pages: admins only (404 to anyone else), users, quotas, prices, the audit."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, User
from tests.console.conftest import csrf_of, sign_in, signed_in

HTML = {"Accept": "text/html"}


@pytest.fixture
def root(api: Api) -> User:
    return api.user("root", role="admin")


def test_only_an_admin_sees_the_operators_pages(api: Api, ann: User, root: User) -> None:
    client = signed_in(api, ann)
    assert "/console/operators" not in client.get("/console/jobs").text  # not in the nav either
    token = csrf_of(client.get("/console/jobs").text)
    assert client.get("/console/operators", headers=HTML).status_code == 404
    for path in (
        "/console/operators/users",
        f"/console/operators/users/{root.user_id}/suspend",
        "/console/operators/audit",
    ):
        assert client.post(path, data={"_csrf_token": token, "reason": "x"}).status_code == 404, path
    client = signed_in(api, root)
    page = client.get("/console/operators")
    assert page.status_code == 200 and "<title>Operators · tune console</title>" in page.text
    assert '<a href="/console/operators" aria-current="page">Operators</a>' in page.text
    assert ann.email in page.text and "tiny-llama" in page.text  # users, and the base models
    assert '<label for="new-email">Email</label>' in page.text


def test_an_operator_suspends_and_reactivates_a_user(api: Api, ann: User, root: User) -> None:
    hers = signed_in(api, ann)
    hers.get("/console/jobs")
    admin = api.client.__class__(app=api.client.app)
    with admin:
        assert sign_in(admin, root).status_code == 303
        token = csrf_of(admin.get("/console/operators").text)
        path = f"/console/operators/users/{ann.user_id}/suspend"
        assert admin.post(path, data={"reason": "abuse"}).status_code == 403  # no CSRF token
        reply = admin.post(path, data={"reason": "abuse", "_csrf_token": token}, follow_redirects=False)
        assert reply.status_code == 303
        page = admin.get("/console/operators")
        assert f'action="/console/operators/users/{ann.user_id}/reactivate"' in page.text
        assert (
            api.client.post("/auth/login", json={"email": ann.email, "password": ann.password}).status_code
            != 200
        )
        after = hers.get("/console/jobs", headers=HTML, follow_redirects=False)
        assert after.status_code == 303 and after.headers["location"].startswith("/console/sign-in")  # ended
        again = admin.post(path, data={"reason": "twice", "_csrf_token": token})
        assert again.status_code == 409
        admin.post(f"/console/operators/users/{ann.user_id}/reactivate", data={"_csrf_token": token})
        assert (
            api.client.post("/auth/login", json={"email": ann.email, "password": ann.password}).status_code
            == 200
        )


def test_an_operator_creates_a_user_sets_quotas_and_prices(api: Api, ann: User, root: User) -> None:
    client = signed_in(api, root)
    token = csrf_of(client.get("/console/operators").text)
    made = client.post(
        "/console/operators/users",
        data={"email": "cy@example.com", "password": "pw-cy-console", "role": "user", "_csrf_token": token},
        follow_redirects=False,
    )
    assert made.status_code == 303
    assert (
        api.client.post(
            "/auth/login", json={"email": "cy@example.com", "password": "pw-cy-console"}
        ).status_code
        == 200
    )
    quota = client.post(
        f"/console/operators/users/{ann.user_id}/quota",
        data={"max_concurrent_jobs": "3", "max_dataset_mib": "5", "_csrf_token": token},
    )
    assert quota.status_code == 200
    assert api.rt.quota(ann.user_id).max_concurrent_jobs == 3
    assert api.rt.quota(ann.user_id).max_dataset_bytes == 5 << 20
    price = client.post(
        "/console/operators/prices", data={"gpu_type": "h200", "usd_per_hour": "4.125", "_csrf_token": token}
    )
    assert price.status_code == 200
    prices = api.client.get("/billing/pricing", headers=ann.headers).json()["prices"]
    assert prices["h200"]["usd_micros_per_hour"] == 4_125_000
    past = client.post(
        "/console/operators/prices",
        data={
            "gpu_type": "h200",
            "usd_per_hour": "1",
            "effective_at": "2020-01-01T00:00",
            "_csrf_token": token,
        },
    )
    assert past.status_code == 400


def test_the_audit_runs_and_shows_its_result(api: Api, ann: User, root: User) -> None:
    api.upload(ann)
    client = signed_in(api, root)
    token = csrf_of(client.get("/console/operators").text)
    page = client.post("/console/operators/audit", data={"_csrf_token": token})
    assert page.status_code == 200 and 'id="audit-result"' in page.text
    assert "Clean:" in page.text and f"users/{ann.user_id}" in page.text
