"""A user's monthly budget and its alert thresholds, with the pure rules the ledger applies.

Rules (all integer arithmetic, all pure):

- ``crossed_thresholds(spent, limit, thresholds)``: thresholds ``t`` with ``spent * 100 >= t * limit``.
- ``newly_crossed(before, after, limit, thresholds)``: crossed by going from ``before`` to ``after``.
- ``would_exceed(spent, next_interval_cost, limit)``: ``spent + next_interval_cost > limit``; the
  ledger requests a stop when this holds, so the limit is overshot by at most one interval.

The ``Budget`` aggregate (one per user, in the user's partition) records the limit and each
alert raised, at most once per (period, threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventsourcing.domain import Aggregate

from domain.base import DomainAggregate, check_count
from domain.errors import Conflict, ValidationFailed
from domain.ids import check_id
from domain.money import check_period

__all__ = [
    "DEFAULT_THRESHOLDS_PCT",
    "Budget",
    "BudgetFields",
    "check_thresholds",
    "crossed_thresholds",
    "newly_crossed",
    "would_exceed",
]

DEFAULT_THRESHOLDS_PCT: tuple[int, ...] = (50, 80, 100)


def check_thresholds(thresholds_pct: Sequence[int]) -> list[int]:
    """Thresholds as a sorted list of distinct percentages, each 1-100."""
    values = list(thresholds_pct)
    for value in values:
        check_count(value, where="thresholds_pct", minimum=1, maximum=100)
    if len(set(values)) != len(values):
        raise ValidationFailed("thresholds_pct must not repeat a value", where="thresholds_pct")
    return sorted(values)


def crossed_thresholds(
    spent_usd_micros: int, limit_usd_micros: int | None, thresholds_pct: Sequence[int]
) -> list[int]:
    """The thresholds that ``spent`` has reached (``spent >= t% of limit``); none without a limit."""
    if limit_usd_micros is None:
        return []
    return [t for t in sorted(thresholds_pct) if spent_usd_micros * 100 >= t * limit_usd_micros]


def newly_crossed(
    spent_before: int, spent_after: int, limit_usd_micros: int | None, thresholds_pct: Sequence[int]
) -> list[int]:
    """Thresholds reached at ``spent_after`` but not at ``spent_before``."""
    before = set(crossed_thresholds(spent_before, limit_usd_micros, thresholds_pct))
    return [t for t in crossed_thresholds(spent_after, limit_usd_micros, thresholds_pct) if t not in before]


def would_exceed(
    spent_usd_micros: int, next_interval_cost_usd_micros: int, limit_usd_micros: int | None
) -> bool:
    """True when spending the next interval's cost would take ``spent`` past ``limit`` (None: no limit)."""
    return (
        limit_usd_micros is not None and spent_usd_micros + next_interval_cost_usd_micros > limit_usd_micros
    )


class BudgetFields:
    """What a ``Budget`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    user_id: str
    monthly_limit_usd_micros: int | None
    thresholds_pct: list[int]
    alerts: dict[str, list[int]]
    """Thresholds alerted, per period (``"2026-03"``)."""
    updated_at: datetime


class Budget(DomainAggregate, BudgetFields):
    """``alerts[period]`` lists the thresholds alerted."""

    ID_KIND, ID_KEY = "budget", "user_id"

    class Created(Aggregate.Created):
        user_id: str
        at: datetime

        def apply(self, budget: Budget) -> None:
            budget.user_id, budget.monthly_limit_usd_micros = self.user_id, None
            budget.thresholds_pct, budget.alerts = list(DEFAULT_THRESHOLDS_PCT), {}
            budget.updated_at = self.at

    class BudgetSet(Aggregate.Event):
        monthly_limit_usd_micros: int | None
        thresholds_pct: list[int]
        at: datetime

        def apply(self, budget: Budget) -> None:
            budget.monthly_limit_usd_micros = self.monthly_limit_usd_micros
            budget.thresholds_pct, budget.updated_at = list(self.thresholds_pct), self.at

    class AlertRaised(Aggregate.Event):
        period: str
        threshold_pct: int
        spent_usd_micros: int
        limit_usd_micros: int
        at: datetime

        def apply(self, budget: Budget) -> None:
            budget.alerts.setdefault(self.period, []).append(self.threshold_pct)
            budget.updated_at = self.at

    @classmethod
    def create(cls, user_id: str, at: datetime) -> Budget:
        """A budget with no limit and the default thresholds."""
        check_id(user_id, kind="user_id")
        return cls._create_at(cls.Created, at, user_id=user_id)

    def set_limit(
        self, monthly_limit_usd_micros: int | None, at: datetime, thresholds_pct: Sequence[int] | None = None
    ) -> None:
        """Set (or, with None, remove) the monthly limit; thresholds default to the current ones."""
        if monthly_limit_usd_micros is not None:
            check_count(monthly_limit_usd_micros, where="monthly_limit_usd_micros", minimum=1)
        thresholds = check_thresholds(self.thresholds_pct if thresholds_pct is None else thresholds_pct)
        self._record(
            self.BudgetSet, at, monthly_limit_usd_micros=monthly_limit_usd_micros, thresholds_pct=thresholds
        )

    def alerts_due(self, period: str, spent_usd_micros: int) -> list[int]:
        """Thresholds ``spent`` has reached in ``period`` that have not been alerted yet."""
        done = set(self.alerts.get(period, []))
        return [
            t
            for t in crossed_thresholds(spent_usd_micros, self.monthly_limit_usd_micros, self.thresholds_pct)
            if t not in done
        ]

    def raise_alert(self, period: str, threshold_pct: int, spent_usd_micros: int, at: datetime) -> None:
        """Record that ``spent`` reached ``threshold_pct`` of the limit in ``period``; once per threshold."""
        if self.monthly_limit_usd_micros is None:
            raise Conflict(f"user {self.user_id} has no monthly limit to alert on")
        if threshold_pct not in self.thresholds_pct:
            raise ValidationFailed(
                f"{threshold_pct}% is not one of the thresholds {self.thresholds_pct}", where="threshold_pct"
            )
        check_period(period)
        check_count(spent_usd_micros, where="spent_usd_micros")
        if threshold_pct in self.alerts.get(period, []):
            raise Conflict(
                f"the {threshold_pct}% alert for {period} was already raised", where="threshold_pct"
            )
        if threshold_pct not in crossed_thresholds(
            spent_usd_micros, self.monthly_limit_usd_micros, [threshold_pct]
        ):
            raise Conflict(
                f"spending has not reached {threshold_pct}% of the limit", where="spent_usd_micros"
            )
        self._record(
            self.AlertRaised,
            at,
            period=period,
            threshold_pct=threshold_pct,
            spent_usd_micros=spent_usd_micros,
            limit_usd_micros=self.monthly_limit_usd_micros,
        )
