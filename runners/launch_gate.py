"""What the dispatcher asks of a user before launching their job: the concurrent-job quota and
whether this month's budget is spent (the rules: ``domain.scheduling``).

The quota is the user's (``PlatformApp.get_user``; the platform's default until an operator sets
one); without a platform, none. The spend is folded from the user's own events by the fold the
ledger and billing.json use (``runners.ledger.spend.UserSpend``, kept per user and advanced from
where it was), and the limit is the user's ``Budget``: the ledger's limit decisions, the bill and
this gate agree to the micro-dollar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from domain.errors import NotFound
from domain.money import period_of
from domain.scheduling import check_launch_budget
from runners.ledger.spend import UserSpend
from storage.clock import Clock

if TYPE_CHECKING:
    from domain.applications import PlatformApp, UserApp

__all__ = ["LaunchGate"]


class LaunchGate:
    """A user's quota and budget as the dispatcher sees them at launch.

    Args:
        open_app: the ``UserApp`` of a user id.
        platform: where users' quotas are (None: no quota).
        clock: the time whose month's budget counts.
    """

    def __init__(
        self, open_app: Callable[[str], UserApp], platform: PlatformApp | None, clock: Clock
    ) -> None:
        self.open_app = open_app
        self.platform = platform
        self.clock = clock
        self._spend: dict[str, UserSpend] = {}

    def quota(self, user_id: str) -> int | None:
        """The user's most jobs running at once (None: no limit, or no such user on the platform)."""
        if self.platform is None:
            return None
        try:
            return self.platform.get_user(user_id).max_concurrent_jobs
        except NotFound:
            return None

    def budget_refusal(self, user_id: str) -> str | None:
        """Why the user's job may not launch now for their monthly budget (None: it may)."""
        app = self.open_app(user_id)
        limit = app.get_budget().monthly_limit_usd_micros
        if limit is None:
            return None
        spend = self._spend.setdefault(user_id, UserSpend())
        spend.refresh(app)
        spent = UserSpend.period_total(spend.state, period_of(self.clock()))
        return check_launch_budget(spent_usd_micros=spent, monthly_limit_usd_micros=limit)
