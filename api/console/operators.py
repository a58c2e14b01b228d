"""The console's operators pages (the admin role only; anyone else gets 404, ``requires_admin``):
users (create, suspend, reactivate, quotas), GPU prices, the base models, and the audit.

Every read and write is ``OperatorService``'s (the platform commands ``tune admin`` runs). A
write answers with a redirect back to the page (303), so a reload sends nothing twice. The audit
runs when asked (a button: it replays every partition), and its result is shown on the page it
answers with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from api.auth import Principal
from api.deps import PathId
from api.guards import requires_admin
from api.services.operators import OperatorService
from domain.errors import ValidationFailed
from domain.money import parse_usd
from runtime.context import Runtime

__all__ = ["OperatorPages"]

HOME = "/console/operators"
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
MIB = 1 << 20


class NewUserForm(msgspec.Struct, forbid_unknown_fields=False):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
    role: Annotated[str, msgspec.Meta(max_length=20)] = "user"


class SuspendForm(msgspec.Struct, forbid_unknown_fields=False):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] = "suspended by an operator"


class QuotaForm(msgspec.Struct, forbid_unknown_fields=False):
    max_concurrent_jobs: Annotated[int, msgspec.Meta(ge=0, le=1000)]
    max_dataset_mib: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)]


class PriceForm(msgspec.Struct, forbid_unknown_fields=False):
    gpu_type: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    usd_per_hour: Annotated[str, msgspec.Meta(max_length=40)]
    effective_at: Annotated[str, msgspec.Meta(max_length=40)] = ""

    def when(self) -> datetime | None:
        """``effective_at`` (a ``datetime-local`` field, read as UTC), None for now."""
        if not self.effective_at.strip():
            return None
        try:
            value = datetime.fromisoformat(self.effective_at.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationFailed(f"not a time: {self.effective_at!r:.40}", where="effective_at") from exc
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def provide_operators(runtime: NamedDependency[Runtime]) -> OperatorService:
    return OperatorService(runtime)


def _page(caller: Principal, operators: OperatorService, audit: list[Any] | None = None) -> Template:
    context = {
        "title": "Operators",
        "nav": "operators",
        "caller": caller,
        "users": operators.users(),
        "prices": operators.prices(),
        "base_models": operators.base_models(),
        "audit": audit,
        "audit_ok": audit is not None and all(r.ok for r in audit),
        "mib": MIB,
    }
    return Template("operators.html", context=context)


class OperatorPages(Controller):
    """``/console/operators``: users, prices, base models, the audit."""

    path = "/operators"
    include_in_schema = False
    guards = [requires_admin]
    dependencies = {"operators": Provide(provide_operators, sync_to_thread=False)}

    @get("/", sync_to_thread=True)
    def operators_page(
        self, caller: NamedDependency[Principal], operators: NamedDependency[OperatorService]
    ) -> Template:
        """Every user with their state and quotas, the prices, the base models, the audit's button."""
        return _page(caller, operators)

    @post("/users", sync_to_thread=True, status_code=303)
    def create_user(
        self, data: Annotated[NewUserForm, Form], operators: NamedDependency[OperatorService]
    ) -> Redirect:
        """``tune admin user create``."""
        operators.create_user(data.email, data.password, data.role)
        return Redirect(f"{HOME}#users-title", status_code=303)

    @post("/users/{user_id:str}/suspend", sync_to_thread=True, status_code=303)
    def suspend(
        self, user_id: PathId, data: Annotated[SuspendForm, Form], operators: NamedDependency[OperatorService]
    ) -> Redirect:
        """``tune admin user suspend``: the user's sessions end at once."""
        operators.suspend_user(user_id, data.reason)
        return Redirect(f"{HOME}#users-title", status_code=303)

    @post("/users/{user_id:str}/reactivate", sync_to_thread=True, status_code=303)
    def reactivate(self, user_id: PathId, operators: NamedDependency[OperatorService]) -> Redirect:
        """``tune admin user reactivate``."""
        operators.reactivate_user(user_id)
        return Redirect(f"{HOME}#users-title", status_code=303)

    @post("/users/{user_id:str}/quota", sync_to_thread=True, status_code=303)
    def quota(
        self, user_id: PathId, data: Annotated[QuotaForm, Form], operators: NamedDependency[OperatorService]
    ) -> Redirect:
        """``tune admin user quota`` (the dataset storage in MiB here)."""
        operators.set_quota(user_id, data.max_concurrent_jobs, data.max_dataset_mib * MIB)
        return Redirect(f"{HOME}#users-title", status_code=303)

    @post("/prices", sync_to_thread=True, status_code=303)
    def set_price(
        self, data: Annotated[PriceForm, Form], operators: NamedDependency[OperatorService]
    ) -> Redirect:
        """``tune admin price set``: from now or a later time, never the past."""
        operators.set_price(data.gpu_type, parse_usd(data.usd_per_hour, where="usd_per_hour"), data.when())
        return Redirect(f"{HOME}#prices-title", status_code=303)

    @post("/audit", sync_to_thread=True, status_code=200)
    def audit(
        self, caller: NamedDependency[Principal], operators: NamedDependency[OperatorService]
    ) -> Template:
        """``tune admin audit``, and the page with its result."""
        return _page(caller, operators, operators.audit())
