"""The one mapping from exceptions to HTTP responses, for every route.

::

    domain.errors.ValidationFailed        400  invalid
    domain.errors.PlatformError           400  bad_request
    domain.errors.Unauthenticated         401  unauthenticated
    domain.errors.Forbidden               403  forbidden
    domain.errors.NotFound                404  not_found
    domain.errors.Conflict                409  conflict
    eventsourcing RecordConflictError     409  conflict (someone else wrote first; retry)
    domain.errors.NotOffered              422  not_offered (e.g. hardware_not_offered)
    domain.errors.TooLarge                413  too_large
    domain.errors.RateLimited             429  rate_limited
    domain.errors.BudgetExceeded          429  budget_exceeded (``x-should-retry: false``; on ``/v1``
                                               OpenAI's type ``insufficient_quota``)
    domain.errors.Unavailable             503  unavailable (e.g. no chat engine in this process)
    litestar HTTPException                its status (validation, 401, 404/405 routes, 413, 415, 429)
    anything else                         500  internal (logged; the message says nothing inside)

The body is always ``schemas.ErrorBody``, but on the OpenAI-compatible routes (``/v1/...``), where
it is OpenAI's error object (``openai_schemas.OpenAIErrorBody``: ``message``, ``type``, ``param``
for ``where``, ``code``), so the official clients raise their own typed errors. Handlers never
catch exceptions themselves. Every 401 carries ``WWW-Authenticate: Bearer`` (RFC 6750;
``error="invalid_token"`` when a token was sent), and a 429 that knows how long to wait says so
in ``Retry-After``.
``where`` names what the client sent, as the client knows it: a body field
(``email``, ``thresholds_pct[0]``), ``body`` for the body as a whole, a query
parameter by its name in the URL (``state``), a header (``Content-Type``);
never a Python name of the server.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from eventsourcing.persistence import RecordConflictError
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from api.openai_schemas import OpenAIError, OpenAIErrorBody
from api.schemas import ErrorBody, ErrorDetail
from domain.errors import (
    BudgetExceeded,
    Conflict,
    Forbidden,
    NotFound,
    NotOffered,
    PlatformError,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from storage.eventstore.commits import ChainBroken

__all__ = ["OPENAI_PREFIX", "STATUS", "documented", "exception_handlers", "problem"]

log = logging.getLogger("api")

STATUS: dict[type[PlatformError], int] = {
    ValidationFailed: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    NotOffered: 422,
    TooLarge: 413,
    RateLimited: 429,
    Unavailable: 503,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


def problem(status: int, code: str, message: str, where: str | None = None, **headers: str) -> Response[Any]:
    """An error response in the one shape."""
    return Response(
        ErrorBody(ErrorDetail(code=code, message=message, where=where)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers or None,
    )


def _status_of(exc: PlatformError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 400


def _challenge(request: Request[Any, Any, Any]) -> str:
    """The ``WWW-Authenticate`` value of a 401: the scheme, and whether the token sent was refused."""
    sent = request.headers.get("authorization", "").lower().startswith("bearer ")
    return 'Bearer realm="tune", error="invalid_token"' if sent else 'Bearer realm="tune"'


def _platform_error(request: Request[Any, Any, Any], exc: PlatformError) -> Response[Any]:
    status = _status_of(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = _challenge(request)
    retry_after = getattr(exc, "retry_after_s", None)
    if status == 429 and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, BudgetExceeded):
        headers["x-should-retry"] = "false"  # the official OpenAI clients retry a 429 unless told not to
    return problem(status, exc.code, exc.message, exc.where, **headers)


_BODY = "data"  # the name Litestar gives the decoded body
_NO_BODY = repr(_BODY)  # its message when there is no body at all (a KeyError)
_MISSING_BODY = "the request body is missing; send a JSON object"


def _client_name(request: Request[Any, Any, Any], key: str) -> str:
    """``key`` as the client spells it: ``body`` for the body, a parameter's alias in the URL."""
    if key == _BODY:
        return "body"
    if key.startswith(_BODY + "."):
        return key[len(_BODY) + 1 :]
    handler = request.scope.get("route_handler")
    field = handler.parsed_fn_signature.parameters.get(key) if handler is not None else None
    kwarg = getattr(field, "kwarg_definition", None)
    alias = getattr(kwarg, "name", None)  # QueryParameter(name=...), and the deprecated query=/header=
    return str(alias or key)


_FIELD = re.compile(r"field `([^`]{1,80})`")  # msgspec: "Object missing required field `email`"


def _validation_where(request: Request[Any, Any, Any], exc: ValidationException) -> str | None:
    extra = exc.extra if isinstance(exc.extra, list) else []
    keys = []
    for e in extra:
        if isinstance(e, dict) and e.get("key"):
            named = _FIELD.search(str(e.get("message", ""))) if e["key"] == _BODY else None
            keys.append(named.group(1) if named else _client_name(request, str(e["key"])))
    return ", ".join(dict.fromkeys(keys)) or None


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    details = [
        _MISSING_BODY if str(e["message"]) == _NO_BODY else str(e["message"])
        for e in extra
        if isinstance(e, dict) and e.get("message")
    ]
    head = exc.detail or "invalid request"
    return f"{head}: {'; '.join(details)}" if details else head


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail, exc_info=exc)
        return problem(status, "internal", "internal error; the server log has the details")
    headers = dict(exc.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", _challenge(request))
    if isinstance(exc, ValidationException):
        return problem(400, "invalid", _validation_message(exc), _validation_where(request, exc), **headers)
    message = exc.detail or "request refused"
    if status == 404 and message == "Not Found":
        message = "no such route or resource"
    elif status == 429:
        reset = headers.get("RateLimit-Reset")
        message = "rate limit exceeded" + (f"; retry in {reset} s" if reset else "")
    where = exc.extra.get("where") if isinstance(exc.extra, dict) else None
    return problem(status, _HTTP_CODES.get(status, "bad_request"), message, where, **headers)


def _record_conflict(_: Request[Any, Any, Any], exc: RecordConflictError) -> Response[Any]:
    return problem(409, "conflict", "another request changed this first; try again")


def _ledger_broken(_: Request[Any, Any, Any], exc: ChainBroken) -> Response[Any]:
    log.error("ledger integrity: %s", exc)  # names the partition and commit; the caller is told less
    return problem(
        503,
        "ledger_integrity",
        "the ledger refuses to read or extend a log that fails its integrity check; "
        "an operator must run `tune admin audit`",
    )


def _internal(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal", "internal error; the server log has the details")


OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _shaped_for_path(handler: Any) -> Any:
    """``handler``, answering in OpenAI's error shape on the ``/v1`` routes."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        response = handler(request, exc)
        if not str(request.scope.get("path", "")).startswith(OPENAI_PREFIX):
            return response
        status = response.status_code
        detail: ErrorDetail = response.content.error
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        if detail.code == BudgetExceeded.code:
            kind = "insufficient_quota"  # what OpenAI answers when a quota is spent
        body = OpenAIErrorBody(
            OpenAIError(message=detail.message, type=kind, param=detail.where, code=detail.code)
        )
        return Response(body, status_code=status, media_type=MediaType.JSON, headers=response.headers)

    return handle


exception_handlers: dict[type[Exception], Any] = {
    cls: _shaped_for_path(handler)
    for cls, handler in {
        PlatformError: _platform_error,
        HTTPException: _http_error,
        RecordConflictError: _record_conflict,
        ChainBroken: _ledger_broken,
        Exception: _internal,
    }.items()
}


_MEANINGS = {
    400: "invalid request: a field, key or line is wrong (``where`` names it)",
    401: "no valid token: log in at POST /auth/login",
    403: "refused: a quota or the budget",
    404: "no such object for this user (another user's ids answer the same)",
    409: "conflict: in use, already ended, or changed meanwhile",
    413: "the upload is larger than the limit",
    415: "not an accepted Content-Type or Content-Encoding (``Accept-Post`` lists the types)",
    422: "well-formed, but nothing here can do it",
    429: "too many requests, or failed logins: retry after Retry-After (or RateLimit-Reset) seconds",
    503: "this server does not run that part of the platform",
}


def documented(
    *statuses: int, meanings: dict[int, str] | None = None, shape: type[Any] = ErrorBody
) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a route may answer, all in the one error shape.

    ``meanings`` says what a status means on this route where the general meaning is too vague;
    ``shape`` is the body (``OpenAIErrorBody`` on the ``/v1`` routes).
    """
    codes = (400, 401, 429, *statuses, *(meanings or {}))
    said = _MEANINGS | (meanings or {})
    return {
        code: ResponseSpec(shape, description=said[code], generate_examples=False)
        for code in sorted(set(codes))
    }
