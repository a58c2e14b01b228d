"""Litestar's rate limit, per user, at a constant cost per request.

Litestar's ``RateLimitMiddleware`` keeps each caller's window as a JSON list of
timestamps in a ``Store``, re-encoding the whole list on every request: the
cost grows with the limit. This subclass keeps the same policy (a fixed window
per caller of ``RateLimitConfig.rate_limit``, the same 429 and headers) with the
windows held in process memory, so a request costs the same at any limit.
Like Litestar's default ``MemoryStore``, the windows are per process. The
RateLimit-* headers are appended as raw pairs rather than through a
header-scanning wrapper.
"""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING, Any

from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware

if TYPE_CHECKING:
    from litestar.stores.base import Store
    from litestar.types import ASGIApp, Message, Send

__all__ = ["UserRateLimitMiddleware", "rate_limit_config"]

_PRUNE_EVERY = 4096


class UserRateLimitMiddleware(RateLimitMiddleware):
    """``RateLimitMiddleware`` with in-memory windows (no store round trip, no JSON)."""

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        self._windows: dict[str, CacheObject] = {}
        self._calls = 0

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        now = int(time())
        window = self._windows.get(key)
        if window is None or window.reset <= now:
            window = CacheObject(history=[], reset=now + DURATION_VALUES[self.unit])
            self._windows[key] = window
        self._calls += 1
        if self._calls % _PRUNE_EVERY == 0:
            self._windows = {k: w for k, w in self._windows.items() if w.reset > now}
        return window

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        cache_object.history.append(int(time()))

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        """Append the RateLimit-* headers as raw pairs (no scan of the response's headers)."""
        extra = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.create_response_headers(cache_object).items()
        ]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return send_wrapper


def rate_limit_config(per_minute: int, **kwargs: Any) -> RateLimitConfig:
    """``RateLimitConfig`` for ``per_minute`` requests a minute, with the constant-cost middleware."""
    return RateLimitConfig(
        rate_limit=("minute", per_minute), middleware_class=UserRateLimitMiddleware, **kwargs
    )
