"""Usage groups: metered GPU milliseconds summed per price group, each group priced once.

A group is ``(period, gpu_type, gpu_count, usd_micros_per_hour)`` within one
job; its cost comes from the group's summed milliseconds by the money rule
(``domain.money``), never per heartbeat. Both the job status and the billing
views fold usage through ``add``, so they always agree to the micro-dollar.
"""

from __future__ import annotations

import msgspec

from domain.money import cost_usd_micros as group_cost

__all__ = ["Group", "add", "cost_usd_micros", "gpu_ms"]


class Group(msgspec.Struct, frozen=True):
    """Metered time of one job at one price, in one period."""

    period: str
    gpu_type: str
    gpu_count: int
    usd_micros_per_hour: int
    gpu_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.period, self.gpu_type, self.gpu_count, self.usd_micros_per_hour)

    @property
    def cost_usd_micros(self) -> int:
        return group_cost(self.gpu_ms, self.gpu_count, self.usd_micros_per_hour)


def add(groups: tuple[Group, ...], event: object) -> tuple[Group, ...]:
    """The groups with one ``UsageMetered`` event's milliseconds added to its group (pure)."""
    new = Group(
        period=event.period,  # type: ignore[attr-defined]
        gpu_type=event.gpu_type,  # type: ignore[attr-defined]
        gpu_count=event.gpu_count,  # type: ignore[attr-defined]
        usd_micros_per_hour=event.usd_micros_per_hour,  # type: ignore[attr-defined]
        gpu_ms=event.gpu_ms,  # type: ignore[attr-defined]
    )
    for i, group in enumerate(groups):
        if group.key == new.key:
            merged = msgspec.structs.replace(group, gpu_ms=group.gpu_ms + new.gpu_ms)
            return (*groups[:i], merged, *groups[i + 1 :])
    return (*groups, new)


def cost_usd_micros(groups: tuple[Group, ...]) -> int:
    """The sum of the groups' costs (each group priced once)."""
    return sum(group.cost_usd_micros for group in groups)


def gpu_ms(groups: tuple[Group, ...]) -> int:
    """Wall-clock GPU milliseconds over all groups (not multiplied by the GPU count)."""
    return sum(group.gpu_ms for group in groups)
