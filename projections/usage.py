"""Usage groups: metered GPU milliseconds summed per price group, each group priced once.

A group is ``(period, gpu_type, gpu_count, usd_micros_per_hour)`` within one
job; its cost comes from the group's summed milliseconds by the money rule
(``domain.money``), never per heartbeat. Credited milliseconds (``Job.UsageCredited``) are
kept per group beside the charged ones (``credit``): a group's ``cost_usd_micros`` is its net
cost (what is paid), ``credited_usd_micros`` what the credits took off (``domain.money.group_costs``).
Both the job status and the billing views fold usage through ``add`` and ``credit``, so they
always agree to the micro-dollar.

Serving groups (``ServingGroup``) are the same idea for chat completions: tokens summed per
``(period, model, base_model, prompt price, completion price)`` and priced once
(``domain.money.serving_cost_usd_micros``); ``add_served`` folds a ``ServingUsage.Metered``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from domain.money import dollars, group_costs, serving_cost_usd_micros

__all__ = [
    "Group",
    "ServingGroup",
    "add",
    "add_served",
    "charged_usd_micros",
    "cost_usd_micros",
    "credit",
    "credit_fields",
    "credited_gpu_ms",
    "credited_usd_micros",
    "gpu_ms",
    "served_cost_usd_micros",
]


class Group(msgspec.Struct, frozen=True):
    """Metered time of one job at one price, in one period."""

    period: str
    gpu_type: str
    gpu_count: int
    usd_micros_per_hour: int
    gpu_ms: int = 0
    """Charged (metered) milliseconds."""
    credited_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.period, self.gpu_type, self.gpu_count, self.usd_micros_per_hour)

    @property
    def costs(self) -> tuple[int, int, int]:
        """``(charged, credited, net)`` micro-dollars."""
        return group_costs(self.gpu_ms, self.credited_ms, self.gpu_count, self.usd_micros_per_hour)

    @property
    def cost_usd_micros(self) -> int:
        """The net cost: what is paid."""
        return self.costs[2]

    @property
    def charged_usd_micros(self) -> int:
        return self.costs[0]

    @property
    def credited_usd_micros(self) -> int:
        return self.costs[1]


def add(groups: tuple[Group, ...], event: object) -> tuple[Group, ...]:
    """The groups with one ``UsageMetered`` event's milliseconds added to its group (pure)."""
    return _added(groups, event, "gpu_ms")


def credit(groups: tuple[Group, ...], event: object) -> tuple[Group, ...]:
    """The groups with one ``UsageCredited`` event's milliseconds credited in its group (pure)."""
    return _added(groups, event, "credited_ms")


def _added(groups: tuple[Group, ...], event: object, field: str) -> tuple[Group, ...]:
    new = Group(
        period=event.period,  # type: ignore[attr-defined]
        gpu_type=event.gpu_type,  # type: ignore[attr-defined]
        gpu_count=event.gpu_count,  # type: ignore[attr-defined]
        usd_micros_per_hour=event.usd_micros_per_hour,  # type: ignore[attr-defined]
    )
    ms: int = event.gpu_ms  # type: ignore[attr-defined]
    for i, group in enumerate(groups):
        if group.key == new.key:
            merged = msgspec.structs.replace(group, **{field: getattr(group, field) + ms})
            return (*groups[:i], merged, *groups[i + 1 :])
    return (*groups, msgspec.structs.replace(new, **{field: ms}))


def cost_usd_micros(groups: tuple[Group, ...]) -> int:
    """The sum of the groups' net costs (each group priced once)."""
    return sum(group.cost_usd_micros for group in groups)


def charged_usd_micros(groups: tuple[Group, ...]) -> int:
    return sum(group.charged_usd_micros for group in groups)


def credited_usd_micros(groups: tuple[Group, ...]) -> int:
    return sum(group.credited_usd_micros for group in groups)


def credited_gpu_ms(groups: tuple[Group, ...]) -> int:
    return sum(group.credited_ms for group in groups)


def gpu_ms(groups: tuple[Group, ...]) -> int:
    """Wall-clock GPU milliseconds over all groups (not multiplied by the GPU count)."""
    return sum(group.gpu_ms for group in groups)


_CREDIT_FIELDS = ("charged", "charged_usd_micros", "credited", "credited_usd_micros", "credited_gpu_ms")


def credit_fields(groups: tuple[Group, ...]) -> dict[str, Any]:
    """The ``charged``/``credited`` fields of a view over ``groups``, all None if nothing was credited
    (the views write them only then, so histories without credits render as before)."""
    ms = credited_gpu_ms(groups)
    if ms == 0:
        return dict.fromkeys(_CREDIT_FIELDS)
    charged, credited = charged_usd_micros(groups), credited_usd_micros(groups)
    return {
        "charged": dollars(charged),
        "charged_usd_micros": charged,
        "credited": dollars(credited),
        "credited_usd_micros": credited,
        "credited_gpu_ms": ms,
    }


class ServingGroup(msgspec.Struct, frozen=True):
    """Completions of one model at one price, in one period: tokens and engine time summed."""

    period: str
    model: str
    base_model: str
    prompt_usd_micros_per_mtok: int
    completion_usd_micros_per_mtok: int
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (
            self.model,
            self.base_model,
            self.prompt_usd_micros_per_mtok,
            self.completion_usd_micros_per_mtok,
        )

    @property
    def cost_usd_micros(self) -> int:
        return serving_cost_usd_micros(
            self.prompt_tokens,
            self.completion_tokens,
            self.prompt_usd_micros_per_mtok,
            self.completion_usd_micros_per_mtok,
        )


_COUNTS = ("requests", "prompt_tokens", "completion_tokens", "engine_ms")


def add_served(groups: tuple[ServingGroup, ...], event: Any) -> tuple[ServingGroup, ...]:
    """The groups (of one period, by key) with a ``ServingUsage.Metered`` event's lines added (pure)."""
    by_key = {g.key: g for g in groups}
    for line in event.lines:
        new = ServingGroup(
            event.period,
            line["model"],
            line["base_model"],
            line["prompt_usd_micros_per_mtok"],
            line["completion_usd_micros_per_mtok"],
        )
        found = by_key.get(new.key, new)
        by_key[new.key] = msgspec.structs.replace(
            found, **{name: getattr(found, name) + int(line[name]) for name in _COUNTS}
        )
    return tuple(by_key[k] for k in sorted(by_key))


def served_cost_usd_micros(groups: tuple[ServingGroup, ...]) -> int:
    return sum(group.cost_usd_micros for group in groups)
