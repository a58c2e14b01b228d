"""The platform's one error hierarchy, mapped once to HTTP in ``api/errors.py``.

::

    PlatformError                 400  (code: bad_request)
    ├── ValidationFailed          400  a field, key or line is wrong (``where`` names it)
    │   └── Problems              400  several at once: ``problems`` lists each, ``where`` joins their keys
    ├── Unauthenticated           401
    ├── Forbidden                 403  includes quota refusals
    ├── NotFound                  404  also for other users' objects
    ├── Conflict                  409  impossible transition, in-use, version conflict
    ├── NotOffered                422  well-formed, but nothing here can do it (hardware no backend offers)
    ├── TooLarge                  413
    ├── RateLimited               429
    │   └── BudgetExceeded        429  the monthly budget is spent (``x-should-retry: false``)
    └── Unavailable               503  a part of the platform this process does not run (e.g. serving)

Every error carries a stable ``code``, a human ``message`` and optionally
``where`` (a field name, config key or ``line N``). A request with several things wrong is
refused once with all of them (``Problems``): ``where`` names every key, comma-separated, and
``message`` spells each one out, so the one error shape carries them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "BudgetExceeded",
    "Conflict",
    "Forbidden",
    "NotFound",
    "NotOffered",
    "PlatformError",
    "Problem",
    "Problems",
    "RateLimited",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
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


class Problem(NamedTuple):
    """One thing wrong with a request: the key or field (``lora.r``, ``gpu_type``) and what is wrong."""

    where: str
    message: str


class Problems(ValidationFailed):
    """Several things wrong with one request, reported together; ``problems`` lists them all.

    Args:
        problems: each one, in the order found (at least one).
        subject: what they are wrong with, for the message (``training config``, ``start request``).
    """

    def __init__(self, problems: Iterable[Problem], *, subject: str) -> None:
        self.problems = tuple(problems)
        keys = ", ".join(dict.fromkeys(p.where for p in self.problems))
        detail = "; ".join(f"{p.where}: {p.message}" for p in self.problems)
        count = "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
        super().__init__(f"{subject} has {count}: {detail}", where=keys)

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def of(error: PlatformError) -> tuple[Problem, ...]:
        """The problems an error reports: its own list, or itself as one (``where`` or ``request``)."""
        if isinstance(error, Problems):
            return error.problems
        return (Problem(error.where or "request", error.message),)


class Unauthenticated(PlatformError):
    code = "unauthenticated"


class Forbidden(PlatformError):
    code = "forbidden"


class NotFound(PlatformError):
    code = "not_found"


class Conflict(PlatformError):
    code = "conflict"


class NotOffered(PlatformError):
    """The request is well-formed, but the platform has nothing that can do it (e.g. a job for
    hardware no launch backend offers: code ``hardware_not_offered``)."""

    code = "not_offered"


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


class BudgetExceeded(RateLimited):
    """The user's monthly budget is spent: nothing more is served this month (or until it is raised)."""

    code = "budget_exceeded"


class Unavailable(PlatformError):
    code = "unavailable"
