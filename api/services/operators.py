"""``OperatorService``: what an operator (the admin role) does to the platform: users (create,
suspend, reactivate, quotas), GPU prices, the base-model catalogue, the audit.

The same platform commands and views ``tune admin`` uses (``PlatformApp``: ``suspend_user``,
``set_quota``, ``set_price``, ``price_list``, ``base_models``; the users view; ``AccountService``
for a new user; ``projections.audit.audit_bucket``). Callers check the role first (the console's
``requires_admin``).
"""

from __future__ import annotations

from datetime import datetime

from api.services.accounts import AccountService
from domain.read_models import BaseModelView, PriceListView
from projections.audit import AuditReport, audit_bucket
from projections.users import UserRow, UsersView
from runtime.context import Quota, Runtime
from runtime.settings import heartbeat_key_of
from storage import layout

__all__ = ["OperatorService"]


class OperatorService:
    """The platform partition, as an operator sees and changes it."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def users(self) -> list[tuple[UserRow, Quota]]:
        """Every user, oldest first, with their quotas."""
        view = self.rt.view_or(layout.users(), UsersView, UsersView(position=0, users=[]))
        return [(user, self.rt.quota(user.user_id)) for user in view.users]

    def create_user(self, email: str, password: str, role: str = "user") -> str:
        user_id = AccountService(self.rt).create_user(email, password, role)
        self._committed()
        return user_id

    def suspend_user(self, user_id: str, reason: str) -> None:
        """Logins are refused and the user's tokens (and console sessions) end at once."""
        self.rt.platform.suspend_user(user_id, reason, self.rt.clock())
        self._committed()

    def reactivate_user(self, user_id: str) -> None:
        self.rt.platform.reactivate_user(user_id, self.rt.clock())
        self._committed()

    def set_quota(self, user_id: str, max_concurrent_jobs: int, max_dataset_bytes: int) -> None:
        self.rt.platform.set_quota(user_id, max_concurrent_jobs, max_dataset_bytes, self.rt.clock())
        self._committed()

    def prices(self) -> PriceListView:
        """Prices in force now, and changes scheduled for later."""
        return self.rt.platform.price_list(self.rt.clock())

    def set_price(
        self, gpu_type: str, usd_micros_per_hour: int, effective_at: datetime | None = None
    ) -> None:
        """From ``effective_at`` (default now; never in the past) on."""
        at = self.rt.clock()
        self.rt.platform.set_price(gpu_type, usd_micros_per_hour, effective_at or at, at)
        self._committed()

    def base_models(self) -> list[BaseModelView]:
        return self.rt.platform.base_models()

    def audit(self) -> list[AuditReport]:
        """``tune admin audit``: hash chains, the views against a replay, metering against the heartbeat
        archive, for every partition (in this process: one partition in memory at a time)."""
        return audit_bucket(self.rt.bucket, heartbeat_key=heartbeat_key_of(self.rt.settings), workers=1)

    def _committed(self) -> None:
        self.rt.committed(layout.PLATFORM)
