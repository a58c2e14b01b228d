"""Signing in to the console: a login token in a cookie, and CSRF tokens on every form.

Sign-in checks the email and password exactly as ``POST /auth/login`` does
(``AccountService.login``: argon2, the same one 401 for every refusal, the same backoff per
account and address) and puts the same kind of login token (same secret, expiry and token
version, so a suspension or a password change ends the session at once) in the cookie
``SESSION_COOKIE``: HttpOnly (no script reads it), SameSite=Strict (no other site's page sends
it), path ``/console``, and Secure when the request came over https. Litestar's
``JWTCookieAuth`` middleware reads it on the console's routes only: the API's bearer middleware
skips ``/console`` (``api.auth.CONSOLE_PATHS``) and the console's skips everything else, so no
API route accepts the cookie.

Every unsafe request to the console carries a CSRF token (Litestar's ``CSRFConfig``, its
double-submit cookie: the form's hidden ``_csrf_token`` or the ``X-CSRFToken`` header must match
the HttpOnly cookie ``CSRF_COOKIE``); the API's paths are excluded, as bearer tokens are no
ambient credential. Signing out deletes the session cookie (the token itself, like an API login
token, stays valid until it expires).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.middleware.rate_limit import get_remote_address
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template
from litestar.security.jwt import JWTCookieAuth, Token
from litestar.types import Message, Scope

from api.auth import Principal, RememberedToken, jwt_secret_of, principal_of_token, token_extras
from api.services import AccountService
from runtime.context import Runtime
from runtime.settings import Settings

__all__ = [
    "CSRF_COOKIE",
    "HOME",
    "SESSION_COOKIE",
    "SignInController",
    "build_cookie_auth",
    "build_csrf_config",
    "local_target",
    "secure_cookies_on_https",
]

SESSION_COOKIE = "tune_session"
CSRF_COOKIE = "tune_csrf"
CSRF_HEADER = "x-csrftoken"
COOKIE_PATH = "/console"
HOME = "/console/jobs"
NOT_CONSOLE = "^/(?!console(/|$))."
"""Every path but the console's (and ``/`` itself, which serves nothing)."""
SIGN_IN = "/console/sign-in"


def build_cookie_auth(settings: Settings, runtime: Runtime) -> JWTCookieAuth[Principal, Token]:
    """Litestar's JWT cookie auth for the console: the API's tokens and checks, from ``SESSION_COOKIE``."""

    async def retrieve_user(token: Token, _: Any) -> Principal:
        return principal_of_token(runtime, token)

    return JWTCookieAuth[Principal, Token](
        token_secret=jwt_secret_of(settings),
        token_cls=RememberedToken,
        retrieve_user_handler=retrieve_user,
        default_token_expiration=timedelta(seconds=settings.token_ttl_s),
        key=SESSION_COOKIE,
        path=COOKIE_PATH,
        samesite="strict",
        exclude=["^/console/static/"],  # on the console's routes only (api.console's Router)
        exclude_http_methods=["OPTIONS"],
        require_claims=["exp", "sub"],
    )


def build_csrf_config(settings: Settings) -> CSRFConfig:
    """CSRF tokens on the console's forms; the API's paths (bearer tokens) are left alone."""
    return CSRFConfig(
        secret=jwt_secret_of(settings),
        cookie_name=CSRF_COOKIE,
        cookie_path=COOKIE_PATH,
        cookie_httponly=True,  # pages carry the token in their forms and a meta tag
        cookie_samesite="strict",
        header_name=CSRF_HEADER,
        exclude=[NOT_CONSOLE],
    )


async def secure_cookies_on_https(message: Message, scope: Scope) -> None:
    """Mark every cookie of a console reply Secure when the request came over https."""
    if message["type"] != "http.response.start" or scope.get("scheme") != "https":
        return
    if not str(scope.get("path", "")).startswith(COOKIE_PATH):
        return
    message["headers"] = [
        (name, value + b"; Secure")
        if name.lower() == b"set-cookie" and b"; secure" not in value.lower()
        else (name, value)
        for name, value in message["headers"]
    ]


def local_target(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, else the jobs page (no open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


class SignInForm(msgspec.Struct, forbid_unknown_fields=False):
    email: Annotated[str, msgspec.Meta(max_length=254)] = ""
    password: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    next: Annotated[str, msgspec.Meta(max_length=500)] = ""


class SignInController(Controller):
    """``/console/sign-in`` (the form, and signing in) and ``/console/sign-out``."""

    path = ""
    include_in_schema = False

    @get("/sign-in", exclude_from_auth=True)
    async def form(
        self, next_page: Annotated[str | None, QueryParameter(name="next", max_length=500)] = None
    ) -> Template:
        return sign_in_page(local_target(next_page))

    @post("/sign-in", exclude_from_auth=True, sync_to_thread=True, status_code=303)
    def sign_in(
        self,
        data: Annotated[SignInForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        accounts: NamedDependency[AccountService],
        runtime: NamedDependency[Runtime],
        state: State,
        request: Request[Any, Any, Any],
    ) -> Redirect:
        """Check the email and password as ``POST /auth/login`` does; a refusal shows the form again
        (``api.console.errors``)."""
        caller = accounts.login(data.email, data.password, get_remote_address(request))
        ttl = timedelta(seconds=runtime.settings.token_ttl_s)
        cookie_auth: JWTCookieAuth[Principal, Token] = state.console_auth
        token = cookie_auth.create_token(
            identifier=caller.user_id, token_expiration=ttl, token_extras=token_extras(caller)
        )
        return Redirect(
            local_target(data.next),
            status_code=303,
            cookies=[session_cookie(token, int(ttl.total_seconds()), request)],
        )

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any]) -> Redirect:
        return Redirect(SIGN_IN, status_code=303, cookies=[session_cookie("", 0, request)])


def session_cookie(token: str, max_age: int, request: Request[Any, Any, Any]) -> Cookie:
    """The session cookie (an empty one with ``max_age`` 0 deletes it)."""
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def sign_in_page(
    target: str, *, error: str | None = None, email: str = "", status_code: int = 200
) -> Template:
    return Template(
        "sign_in.html",
        context={"title": "Sign in", "next": target, "error": error, "email": email},
        status_code=status_code,
    )
