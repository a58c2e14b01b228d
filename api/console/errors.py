"""The console's errors as pages: the API's one mapping (``api.errors``) decides the status and the
message; here they are only shown as HTML.

- a page asked for without a session (401 on a GET of a page): a redirect to the sign-in form,
  coming back to the page after;
- a refused sign-in (wrong email or password, or the backoff's 429 with its ``Retry-After``): the
  form again, with the message;
- a refused CSRF check (403): a page that says the form expired;
- anything else: ``error.html`` with the status and the API's message (another user's job is the
  same 404 as an unknown one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.exceptions import PermissionDeniedException
from litestar.response import Redirect, Template
from litestar.utils.scope.state import ScopeState

from api.console.auth import SIGN_IN, local_target, sign_in_page
from api.errors import exception_handlers as api_exception_handlers

__all__ = ["exception_handlers"]

_TITLES = {
    400: "Not accepted",
    401: "Signed out",
    403: "Refused",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Unavailable",
}
_CSRF_REFUSED = (
    "This form expired or did not come from this console (its security token did not match). "
    "Reload the page and try again."
)


def _form_value(request: Request[Any, Any, Any], name: str) -> str:
    form = ScopeState.from_scope(request.scope).form  # parsed already by the CSRF check
    value = form.get(name) if isinstance(form, dict) else None
    return value if isinstance(value, str) else ""


def _as_page(handler: Any) -> Any:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        reply = handler(request, exc)
        status, detail = reply.status_code, reply.content.error
        path = request.url.path
        headers = {k: v for k, v in reply.headers.items() if k.lower() in {"retry-after"}}
        if status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return Redirect(f"{SIGN_IN}?next={quote(local_target(target), safe='/')}", status_code=303)
        if path == SIGN_IN and request.method == "POST" and status in (400, 401, 429):
            message = "Wrong email or password." if status == 401 else detail.message
            page = sign_in_page(
                local_target(_form_value(request, "next")),
                error=message,
                email=_form_value(request, "email"),
                status_code=status,
            )
            page.headers.update(headers)
            return page
        message = _CSRF_REFUSED if isinstance(exc, PermissionDeniedException) else detail.message
        return Template(
            "error.html",
            context={"title": _TITLES.get(status, f"Error {status}"), "status": status, "message": message},
            status_code=status,
            headers=headers,
        )

    return handle


exception_handlers: dict[type[Exception], Any] = {
    cls: _as_page(handler) for cls, handler in api_exception_handlers.items()
}
