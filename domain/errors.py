"""The platform's one error hierarchy, mapped once to HTTP in ``api/errors.py``.

::

    PlatformError                 400  (code: bad_request)
    ├── ValidationFailed          400  a field, key or line is wrong (``where`` names it)
    ├── Unauthenticated           401
    ├── Forbidden                 403  includes quota refusals
    ├── NotFound                  404  also for other users' objects
    ├── Conflict                  409  impossible transition, in-use, version conflict
    ├── TooLarge                  413
    └── RateLimited               429

Every error carries a stable ``code``, a human ``message`` and optionally
``where`` (a field name, config key or ``line N``).
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "NotFound",
    "PlatformError",
    "RateLimited",
    "TooLarge",
    "Unauthenticated",
    "ValidationFailed",
]


class PlatformError(Exception):
    """Base of every error the platform reports to a user."""

    code = "bad_request"

    def __init__(self, message: str, *, where: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ValidationFailed(PlatformError):
    code = "invalid"


class Unauthenticated(PlatformError):
    code = "unauthenticated"


class Forbidden(PlatformError):
    code = "forbidden"


class NotFound(PlatformError):
    code = "not_found"


class Conflict(PlatformError):
    code = "conflict"


class TooLarge(PlatformError):
    code = "too_large"


class RateLimited(PlatformError):
    """``retry_after_s``: how long to wait before trying again (the ``Retry-After`` header), if known."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message, where=where, code=code)
        self.retry_after_s = retry_after_s
