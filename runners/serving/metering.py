"""Metered serving: every chat completion in the ledger, batched per user and flush.

``ServingMeter.record`` is a ``Runtime.completion_served`` hook: it only appends the completion
(its time, model, base model, prompt and completion tokens, engine milliseconds) to the pending
batch. ``flush`` (every ``interval_s`` on its thread, and on ``close``) prices each completion by the
serving price list in force when it was served (``domain.pricing``, per base model per million
tokens), sums them per group and billing period, and records them with
``UserApp.meter_serving``: one commit per user per flush, however many requests, with the monthly
budget's alerts the new spend makes due (the spend is the billing fold's: ``runners.ledger.spend``).

A flush that cannot be written (the store unreachable) keeps its completions pending for the
next one; a version conflict (another writer first) is retried at once. What a process still
holds when it dies unflushed is lost to the bill (at most one interval of completions).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from domain.errors import Conflict, NotFound
from domain.money import period_of
from domain.pricing import ServingPrice, serving_price_in
from domain.serving import ServedLine
from runners.ledger.spend import UserSpend
from runtime.context import Runtime
from runtime.serving import Completion
from storage import layout

__all__ = ["ServingMeter"]

log = logging.getLogger(__name__)

_FREE = ServingPrice(0, 0)
_RETRIES = 3


class _Served(msgspec.Struct, frozen=True):
    at: datetime
    model: str
    base_model: str
    prompt_tokens: int
    completion_tokens: int
    engine_ms: int


class ServingMeter:
    """The serving role's batcher of completions into the ledger (module docstring).

    Args:
        runtime: the process's context (applications, views, projector, clock).
        interval_s: seconds between flushes of the background thread (``start``).
    """

    def __init__(self, runtime: Runtime, *, interval_s: float = 5.0) -> None:
        self.rt = runtime
        self.interval_s = interval_s
        self._pending: dict[str, list[_Served]] = defaultdict(list)
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._spend: dict[str, UserSpend] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the hook ---------------------------------------------------------------------------

    def record(self, user_id: str, model: str, completion: Completion) -> None:
        """A completion was served (``Runtime.completion_served``): keep it for the next flush."""
        served = _Served(
            at=self.rt.clock(),
            model=model,
            base_model=self._base_of(user_id, model),
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            engine_ms=completion.engine_ms,
        )
        with self._lock:
            self._pending[user_id].append(served)

    def pending(self) -> int:
        """Completions recorded and not flushed yet."""
        with self._lock:
            return sum(len(items) for items in self._pending.values())

    def _base_of(self, user_id: str, model: str) -> str:
        if model in self.rt.base_model_names():
            return model
        found = self.rt.view_json(layout.model_metadata(user_id, model)) or {}
        return str(found.get("base_model") or model)

    # -- flushing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Record every pending completion, one commit per user; returns the completions recorded."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, defaultdict(list)
            if not batch:
                return 0
            prices = self.rt.platform.serving_prices()
            recorded = 0
            for user_id, items in batch.items():
                try:
                    self._flush_user(user_id, _lines(items, prices))
                except Exception:  # keep them for the next flush; the others go on
                    log.exception("serving usage of %s not recorded; kept for the next flush", user_id)
                    with self._lock:
                        self._pending[user_id][:0] = items
                else:
                    recorded += len(items)
            return recorded

    def _flush_user(self, user_id: str, lines: Mapping[str, Sequence[ServedLine]]) -> None:
        app = self.rt.user_app(user_id)
        spend = self._spend.setdefault(user_id, UserSpend())

        def spend_after(events: Sequence[Any]) -> dict[str, int]:
            after = spend.after(events)
            return {e.period: UserSpend.period_total(after, e.period) for e in events}

        for attempt in range(_RETRIES):
            spend.refresh(app)
            try:
                app.meter_serving(lines, self.rt.clock(), spend_after=spend_after)
                break
            except Conflict as exc:
                if exc.code != "version_conflict" or attempt == _RETRIES - 1:
                    raise
        self.rt.committed(layout.user_partition(user_id))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``interval_s`` on a daemon thread until ``close``."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="serving-meter", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread, then flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()


def _lines(
    items: Sequence[_Served], prices: Sequence[tuple[str, datetime, ServingPrice]]
) -> dict[str, list[ServedLine]]:
    """Completions as lines per period, each priced as of when it was served (not summed here:
    ``ServingUsage.meter`` merges lines of one group)."""
    lines: dict[str, list[ServedLine]] = defaultdict(list)
    for item in items:
        try:
            price = serving_price_in(prices, item.base_model, item.at)
        except NotFound:
            log.warning("no serving price for %s: its completions are recorded free", item.base_model)
            price = _FREE
        lines[period_of(item.at)].append(
            ServedLine(
                model=item.model,
                base_model=item.base_model,
                prompt_usd_micros_per_mtok=price.prompt_usd_micros_per_mtok,
                completion_usd_micros_per_mtok=price.completion_usd_micros_per_mtok,
                requests=1,
                prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens,
                engine_ms=item.engine_ms,
            )
        )
    return lines
