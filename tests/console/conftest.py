"""Fixtures of the console tests: the API tests' real app (``tests.api.conftest``), signed in through
the console's own form."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import TestClient

from tests.api.conftest import Api, User, ann, api, api_settings, bob  # noqa: F401  (fixtures)

CSRF_INPUT = re.compile(r'name="_csrf_token" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient[Any], user: User, *, base: str = "") -> Any:
    """Sign ``user`` in through the form (cookies kept by ``client``); the POST's reply."""
    client.cookies.clear()
    page = client.get(f"{base}/console/sign-in")
    assert page.status_code == 200, page.text
    return client.post(
        f"{base}/console/sign-in",
        data={"email": user.email, "password": user.password, "_csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )


def signed_in(under_test: Api, user: User) -> TestClient[Any]:
    reply = sign_in(under_test.client, user)
    assert reply.status_code == 303, reply.text
    return under_test.client
