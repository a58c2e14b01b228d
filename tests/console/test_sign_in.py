"""Signing in to the console: the cookie's flags, CSRF on every form, the API's login checks."""

from __future__ import annotations

from tests.api.conftest import Api, User
from tests.console.conftest import csrf_of, sign_in, signed_in

HTML = {"Accept": "text/html"}


def _set_cookie(reply, name: str) -> str:  # type: ignore[no-untyped-def]
    found = [v for v in reply.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert found, reply.headers
    return found[0]


def test_the_sign_in_page_has_a_labelled_form_with_a_csrf_token(api: Api) -> None:
    page = api.client.get("/console/sign-in")
    assert page.status_code == 200
    assert "<title>Sign in · tune console</title>" in page.text
    assert '<label for="email">' in page.text and '<label for="password">' in page.text
    assert csrf_of(page.text)
    cookie = _set_cookie(page, "tune_csrf").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_signing_in_sets_an_httponly_strict_session_cookie_and_goes_to_the_jobs(api: Api, ann: User) -> None:
    reply = sign_in(api.client, ann)
    assert reply.status_code == 303 and reply.headers["location"] == "/console/jobs"
    cookie = _set_cookie(reply, "tune_session").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here
    page = api.client.get("/console/jobs")
    assert page.status_code == 200 and ann.email in page.text
    assert '<a href="/console/jobs" aria-current="page">Jobs</a>' in page.text


def test_over_https_the_cookies_are_secure(api: Api, ann: User) -> None:
    reply = sign_in(api.client, ann, base="https://testserver.local")
    assert reply.status_code == 303
    assert "; secure" in _set_cookie(reply, "tune_session").lower()
    api.client.cookies.clear()
    page = api.client.get("https://testserver.local/console/sign-in")
    assert "; secure" in _set_cookie(page, "tune_csrf").lower()


def test_a_wrong_password_shows_the_form_again_with_the_same_401(api: Api, ann: User) -> None:
    page = api.client.get("/console/sign-in")
    reply = api.client.post(
        "/console/sign-in",
        data={"email": ann.email, "password": "wrong", "_csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert reply.status_code == 401
    assert "Wrong email or password." in reply.text and 'role="alert"' in reply.text
    assert f'value="{ann.email}"' in reply.text
    assert not [v for v in reply.headers.get_list("set-cookie") if v.startswith("tune_session=")]


def test_repeated_failures_earn_the_apis_backoff(api: Api, ann: User) -> None:
    token = csrf_of(api.client.get("/console/sign-in").text)
    codes = [
        api.client.post(
            "/console/sign-in", data={"email": ann.email, "password": "bad", "_csrf_token": token}
        ).status_code
        for _ in range(7)
    ]
    assert codes[:6] == [401] * 6 and codes[6] == 429  # 5 free failures; the 6th closes the account


def test_a_form_post_without_a_csrf_token_is_refused(api: Api, ann: User) -> None:
    api.client.get("/console/sign-in")  # the CSRF cookie is there; the form field is not
    reply = api.client.post(
        "/console/sign-in", data={"email": ann.email, "password": ann.password}, follow_redirects=False
    )
    assert reply.status_code == 403 and "security token" in reply.text
    forged = api.client.post(
        "/console/sign-in",
        data={"email": ann.email, "password": ann.password, "_csrf_token": "0" * 128},
        follow_redirects=False,
    )
    assert forged.status_code == 403


def test_a_page_without_a_session_redirects_to_sign_in_and_back(api: Api, ann: User) -> None:
    reply = api.client.get("/console/jobs?state=running", headers=HTML, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/sign-in?next=/console/jobs%3Fstate%3Drunning"
    page = api.client.get(reply.headers["location"])
    assert 'name="next" value="/console/jobs?state=running"' in page.text
    assert api.client.get("/console/jobs/job-x/live").status_code == 401  # no redirect for a stream


def test_sign_in_never_redirects_off_the_console(api: Api, ann: User) -> None:
    token = csrf_of(api.client.get("/console/sign-in").text)
    for target in ("https://evil.example/", "//evil.example/console/", "/fine-tune/x", "/console\\..\\x"):
        reply = api.client.post(
            "/console/sign-in",
            data={"email": ann.email, "password": ann.password, "_csrf_token": token, "next": target},
            follow_redirects=False,
        )
        assert reply.headers["location"] == "/console/jobs", target


def test_the_session_cookie_is_no_api_credential(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    job_id = api.job(ann)
    # the cookie's path keeps browsers from sending it to the API; sent anyway, the API ignores it
    token = client.cookies.get("tune_session")
    reply = client.get(f"/fine-tune/{job_id}/status", headers={"Cookie": f"tune_session={token}"})
    assert reply.status_code == 401


def test_signing_out_deletes_the_session(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    page = client.get("/console/jobs")
    reply = client.post("/console/sign-out", data={"_csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/console/sign-in"
    assert "max-age=0" in _set_cookie(reply, "tune_session").lower()
    assert client.get("/console/jobs", headers=HTML, follow_redirects=False).status_code == 303


def test_a_suspended_users_session_ends_at_once(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    api.rt.platform.suspend_user(ann.user_id, "abuse", api.rt.clock())
    api.rt.committed("platform")
    reply = client.get("/console/jobs", headers=HTML, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"].startswith("/console/sign-in")
