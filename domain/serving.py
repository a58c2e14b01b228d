"""A user's metered serving (chat completions): token counts and engine time, batched.

``ServingUsage`` is one per user (in the user's partition). The serving role does not record each
completion: it sums them per group and records a ``Metered`` event per billing period and flush
(``UserApp.meter_serving``: one commit per user per flush). A line of ``Metered`` is one group,
``(model, base_model, prompt price, completion price)``, with the requests, prompt and completion
tokens and engine milliseconds summed since the last flush; the prices are the serving price list's
(``domain.pricing``, per million tokens) in force when each completion was served. Its cost is
computed from the group's summed tokens by the money rule (``domain.money.serving_cost_usd_micros``),
once per group and period in the projections: never per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count
from domain.errors import ValidationFailed
from domain.ids import check_id
from domain.money import check_period
from domain.pricing import check_serving_model

__all__ = ["ServedLine", "ServingUsage", "ServingUsageFields"]


class ServedLine(msgspec.Struct, frozen=True, kw_only=True):
    """One group of completions in one period: what ``Metered.lines`` holds (as dicts)."""

    model: str
    """What the requests named: a base model or the user's model id."""
    base_model: str
    prompt_usd_micros_per_mtok: int
    completion_usd_micros_per_mtok: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    engine_ms: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (
            self.model,
            self.base_model,
            self.prompt_usd_micros_per_mtok,
            self.completion_usd_micros_per_mtok,
        )

    def check(self) -> ServedLine:
        check_serving_model(self.base_model)
        if not isinstance(self.model, str) or not 0 < len(self.model) <= 200:
            raise ValidationFailed("model must be a name of 1-200 characters", where="model")
        for name in ServedLine.__struct_fields__[2:]:
            check_count(getattr(self, name), where=name)
        check_count(self.requests, where="requests", minimum=1)
        return self


class ServingUsageFields:
    """What a ``ServingUsage`` knows, set by its events (see ``domain.base``)."""

    user_id: str
    requests: int
    """Completions metered, all periods together."""
    updated_at: datetime


class ServingUsage(DomainAggregate, ServingUsageFields):
    """The user's metered completions (a per-user singleton)."""

    ID_KIND, ID_KEY = "serving_usage", "user_id"

    class Created(Aggregate.Created):
        user_id: str
        at: datetime

        def apply(self, usage: ServingUsage) -> None:
            usage.user_id, usage.requests, usage.updated_at = self.user_id, 0, self.at

    class Metered(Aggregate.Event):
        period: str
        lines: list[dict[str, Any]]
        at: datetime

        def apply(self, usage: ServingUsage) -> None:
            usage.requests += sum(int(line["requests"]) for line in self.lines)
            usage.updated_at = self.at

    @classmethod
    def create(cls, user_id: str, at: datetime) -> ServingUsage:
        check_id(user_id, kind="user_id")
        return cls._create_at(cls.Created, at, user_id=user_id)

    def meter(self, period: str, lines: Iterable[ServedLine], at: datetime) -> None:
        """Record ``lines`` (groups of completions served in ``period``), merged by group."""
        check_period(period)
        merged: dict[tuple[str, str, int, int], ServedLine] = {}
        for line in lines:
            line.check()
            found = merged.get(line.key)
            merged[line.key] = line if found is None else _sum(found, line)
        if not merged:
            raise ValidationFailed("nothing to meter", where="lines")
        rows = [msgspec.to_builtins(merged[k]) for k in sorted(merged)]
        self._record(self.Metered, at, period=period, lines=rows)


def _sum(a: ServedLine, b: ServedLine) -> ServedLine:
    return msgspec.structs.replace(
        a,
        requests=a.requests + b.requests,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        engine_ms=a.engine_ms + b.engine_ms,
    )
