"""``create_app(settings, runtime=)``: the Litestar application, on the context it is handed.

Layers, outermost first: JWT authentication (every route but login, health,
the schema and the web console, ``api.console``, which signs in with its own cookie and checks a
CSRF token on every form), the per-user rate limit, the id guard, then a Controller per
resource. Replies of more than ``COMPRESS_MIN_BYTES`` are gzipped for clients that accept it
(a list of 100 jobs: 22 KB -> ~2 KB), but streams (logs, which ``follow`` must flush line by line,
and model downloads, whose size and digest headers describe the bytes sent), which opt out with
``NO_COMPRESSION``. JSON bodies are decoded strictly into each route's ``data`` type (``api.body``). Failed
logins earn a backoff per account and address (``api.throttle``, one per app). Exceptions are
mapped to the one error shape in ``api.errors``.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.config.compression import CompressionConfig
from litestar.datastructures import MutableScopeHeaders, State
from litestar.middleware.rate_limit import get_remote_address
from litestar.openapi import OpenAPIConfig
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope

from api import openai_schemas, schemas
from api.auth import Principal, build_jwt_auth
from api.body import StrictRequest
from api.console import build_console, secure_cookies_on_https
from api.controllers import CONTROLLERS
from api.deps import dependencies
from api.errors import exception_handlers
from api.guards import requires_valid_ids
from api.openapi import close_strict_shapes, restore_zero_bounds
from api.ratelimit import rate_limit_config
from api.streams import NO_COMPRESSION
from api.throttle import LoginThrottle
from runtime.context import Runtime
from runtime.settings import Settings

__all__ = ["COMPRESS_MIN_BYTES", "create_app"]

COMPRESS_MIN_BYTES = 1024


def _rate_key(request: Request[Any, Any, Any]) -> str:
    """Limit per user when the caller is known (the auth middleware runs first), else per address."""
    user = request.scope.get("user")
    return f"user:{user.user_id}" if isinstance(user, Principal) else f"ip:{get_remote_address(request)}"


async def _allow_every_method(message: Message, scope: Scope) -> None:
    """Answer OPTIONS with every method of the route.

    Litestar builds the automatic OPTIONS handler with the first handler registered on a path and
    keeps it when more are added, so ``/datasets/{dataset_id}`` (GET and DELETE) said only DELETE.
    """
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "allow" not in headers:
        return
    template = scope.get("path_template")
    for route in scope["litestar_app"].routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            headers["Allow"] = ", ".join(sorted(route.methods))
            return


def create_app(settings: Settings, *, runtime: Runtime) -> Litestar:
    """The API app on the ``runtime`` its role built (``roles.embedded``; tests build their own)."""
    jwt_auth = build_jwt_auth(settings, runtime)
    console = build_console(settings, runtime)
    rate_limit = rate_limit_config(
        settings.rate_limit_per_minute, exclude=["^/health$", "^/schema"], identifier_for_request=_rate_key
    )
    app = Litestar(
        route_handlers=[*CONTROLLERS, *console.route_handlers],
        dependencies=dependencies,
        guards=[requires_valid_ids],
        exception_handlers=exception_handlers,
        request_class=StrictRequest,
        on_app_init=[jwt_auth.on_app_init],
        middleware=[rate_limit.middleware],
        before_send=[_allow_every_method, secure_cookies_on_https],
        template_config=console.templates,
        csrf_config=console.csrf,
        compression_config=CompressionConfig(
            backend="gzip",
            minimum_size=COMPRESS_MIN_BYTES,
            gzip_compress_level=5,
            exclude_opt_key=NO_COMPRESSION,
        ),
        openapi_config=OpenAPIConfig(
            title="tune",
            version="1",
            description="Fine-tune LLMs on your data; jobs, models, datasets and exact GPU billing.",
        ),
        state=State(
            {
                "runtime": runtime,
                "jwt_auth": jwt_auth,
                "console_auth": console.auth,
                "login_throttle": LoginThrottle(),
            }
        ),
        on_startup=[lambda: runtime.start()],
        on_shutdown=[lambda: runtime.stop()],
        debug=settings.debug,
    )
    close_strict_shapes(app.openapi_schema, schemas)
    restore_zero_bounds(app.openapi_schema, openai_schemas)
    return app
