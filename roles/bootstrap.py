"""What ``tune serve`` does on a new home before it serves: prices, base models, a first user.

Each step is idempotent: on a platform that has them already it adds nothing.
"""

from __future__ import annotations

from api.services.accounts import AccountService, FirstUser
from runtime.context import Runtime
from storage.layout import PLATFORM

__all__ = ["bootstrap", "login_hint"]


def bootstrap(runtime: Runtime) -> FirstUser | None:
    """Default GPU prices, the built-in base-model catalogue, and an admin if there is no user.

    Returns the first user's credentials when one was made (print them once), else None.
    """
    from domain.base_models import CATALOGUE

    at = runtime.clock()
    runtime.platform.ensure_default_prices(at)
    runtime.platform.ensure_base_models(((m.name, m.kind, m.source) for m in CATALOGUE.values()), at)
    runtime.committed(PLATFORM)
    return AccountService(runtime).ensure_first_user()


def login_hint(user: FirstUser, api_url: str) -> str:
    """How to log in as the first user (printed by ``tune serve``)."""
    return (
        f"created the first user (admin): {user.email}\n"
        f"  password: {user.password}\n"
        f"log in with:  tune --api-url {api_url} login --email {user.email}\n"
        "(the password is shown only now; create more users with `tune admin user create`)"
    )
