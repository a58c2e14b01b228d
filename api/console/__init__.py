"""The web console: server-rendered pages on the API's own app, under ``/console``.

::

    /console/sign-in, /console/sign-out          api.console.auth  (cookie session, CSRF)
    /console/jobs, /console/jobs/{job_id}[/live]  api.console.jobs  (list, page, live stream, stop)
    /console/datasets[/{dataset_id}]              api.console.datasets  (list, upload, report, delete)
    /console/models[/{model_id}[/download]|/chat[/stream]] api.console.models  (list, card, download, chat)
    /console/billing[/budget|/report.csv]         api.console.billing  (usage, months, budget, prices, CSV)
    /console/operators[/users|/prices|/audit]     api.console.operators  (the admin role only: 404 otherwise)
    /console/static/...                           the stylesheet, the page script, vendored
                                                  uPlot and htmx (never a CDN)

A page group is one Controller module with its templates (``templates/<group>*.html``, each
extending ``base.html``, whose nav lists the groups): a later group (datasets, models and the
chat playground, billing, operators) is one more module in ``CONTROLLERS`` and one more nav
entry. Pages read through the API's services, so they show what the API answers, with the same
authorization (another user's objects are 404). Every page carries a strict
Content-Security-Policy: scripts and styles come from this site only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Router, get
from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar_htmx import HTMXRequest

from api.body import StrictRequest
from api.console.auth import (
    HOME,
    SignInController,
    build_cookie_auth,
    build_csrf_config,
    secure_cookies_on_https,
)
from api.console.billing import BillingPages
from api.console.datasets import DatasetPages
from api.console.errors import exception_handlers
from api.console.jobs import JobPages
from api.console.models import ModelPages
from api.console.operators import OperatorPages
from api.console.panels import duration
from domain.money import format_usd
from runtime.context import Runtime
from runtime.settings import Settings

__all__ = ["CONTROLLERS", "Console", "build_console", "secure_cookies_on_https"]

HERE = Path(__file__).parent
CONTROLLERS = [SignInController, JobPages, DatasetPages, ModelPages, BillingPages, OperatorPages]
"""One Controller per page group (the nav in ``templates/base.html`` lists them)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@get("/", include_in_schema=False)
async def _home() -> Redirect:
    return Redirect(HOME, status_code=303)


class ConsoleRequest(StrictRequest, HTMXRequest):  # type: ignore[misc]
    """The app's strict request, with litestar-htmx's ``request.htmx`` (what an htmx request asks)."""


def _filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["usd"] = format_usd
    engine.engine.filters["duration"] = duration


class Console:
    """What ``create_app`` adds for the console: its routes, templates, CSRF config and auth."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.auth = build_cookie_auth(settings, runtime)
        self.csrf = build_csrf_config(settings)
        self.templates = TemplateConfig(
            directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_filters
        )
        self.router = Router(
            path="/console",
            route_handlers=[_home, *CONTROLLERS],
            middleware=[self.auth.middleware],
            exception_handlers=exception_handlers,
            request_class=ConsoleRequest,
            response_headers=SECURITY_HEADERS,
            include_in_schema=False,
        )
        self.static = create_static_files_router(
            path="/console/static",
            directories=[HERE / "static"],
            cache_control=CacheControlHeader(max_age=3600),
            include_in_schema=False,
            name="console_static",
        )

    @property
    def route_handlers(self) -> list[Any]:
        return [self.router, self.static]


def build_console(settings: Settings, runtime: Runtime) -> Console:
    return Console(settings, runtime)
