"""``tune admin``: operator tools that act on the bucket directly (no API server needed).

- ``user create | list | suspend | reactivate | revoke-tokens | quota``: the platform's users;
- ``price list | set | serving``: the GPU price list and the serving prices per base model per
  million tokens (a change can take effect later, never earlier);
- ``audit``: verify each partition's hash chain and compare its stored views with a
  replay from position 0 (exit 1 on any difference); ``rebuild``: rewrite them from it;
- ``report``: a user's monthly billing report replayed from the log (table, CSV, JSON);
- ``calibrate``: a base model's calibration row on a GPU type, measured from real jobs.

The bucket is ``--bucket`` / ``$TUNE_BUCKET``, else ``$TUNE_HOME/bucket``. Server
packages are imported inside the commands only. Writes are folded into the views at
once; a running server's projector also picks them up (its periodic sweep).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter

from cli.context import JsonFlag
from cli.errors import CliError

__all__ = ["Store", "admin_app", "domain_errors", "open_runtime"]

_flags = Parameter(negative=())
admin_app = App(name="admin", help="Operator tools on the bucket.", default_parameter=_flags)
user_app = App(
    name="user", alias="users", help="Create, list, suspend users; set quotas.", default_parameter=_flags
)
price_app = App(
    name="price", alias="prices", help="The GPU and serving price lists.", default_parameter=_flags
)
admin_app.command(user_app)
admin_app.command(price_app)
admin_app.command("cli.audit:audit", name="audit", help="Check hash chains and views against a replay.")
admin_app.command("cli.audit:rebuild", name="rebuild", help="Rewrite the views from a replay of the logs.")
admin_app.command("cli.audit:report", name="report", help="A user's monthly billing report, replayed.")
admin_app.command("cli.admin_base_models:base_model_app", name="base-model", alias="base-models")
admin_app.command(
    "cli.admin_calibrate:calibrate", name="calibrate", help="A base model's calibration row, from real jobs."
)


@Parameter(name="*")
@dataclass
class Store:
    """Which platform to act on."""

    home: Annotated[Path | None, Parameter(help="Server home (default $TUNE_HOME, ~/.tune).")] = None
    bucket: Annotated[str | None, Parameter(help="Bucket URL (default $TUNE_BUCKET, <home>/bucket).")] = None


@contextmanager
def domain_errors() -> Iterator[None]:
    """The platform's errors (not found, conflict, invalid) and a broken log as one-line CLI errors."""
    from domain.errors import PlatformError
    from storage.eventstore.commits import ChainBroken

    try:
        yield
    except PlatformError as exc:
        raise CliError(exc.message, code=exc.code, where=exc.where) from exc
    except ChainBroken as exc:
        raise CliError(str(exc), code="chain_broken") from exc


def open_runtime(store: Store) -> Any:
    """The platform's context (``runtime.context.Runtime``) on the chosen bucket, serving nothing; its
    event store signs and verifies with the chosen home's keys (``--home`` as ``TUNE_HOME`` would)."""
    env = dict(os.environ)
    if store.home is not None:
        env["TUNE_HOME"] = str(store.home.expanduser().resolve())
    if store.bucket:
        env["TUNE_BUCKET"] = store.bucket
    from runtime.context import Runtime
    from runtime.settings import Settings, ledger_of

    try:
        settings = Settings.from_env(env)
        runtime = Runtime(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ledger_of(settings, runtime.bucket, role=settings.ledger.role)  # before any log is opened
    return runtime


def _print(view: Any, json: bool, title: str | None = None) -> None:
    from cli.output import print_json, print_record

    print_json(view) if json else print_record(view, title=title)


# -- users -------------------------------------------------------------------------------


def _new_password(given: str | None) -> tuple[str, bool]:
    """The password to set, and whether it was generated here (then it is printed once)."""
    if given:
        return given, False
    if sys.stdin.isatty():
        from getpass import getpass

        first = getpass("new password: ")
        if first != getpass("again: "):
            raise CliError("the passwords differ")
        if first:
            return first, False
    return secrets.token_hex(12), True  # hex: never starts with "-"


@user_app.command
def create(
    *,
    email: str,
    password: Annotated[
        str | None, Parameter(env_var="TUNE_NEW_PASSWORD", help="Prompted for (or generated) if not given.")
    ] = None,
    role: Literal["user", "admin"] = "user",
    store: Store = Store(),  # noqa: B008 - cyclopts reads the defaults
    json: JsonFlag = False,
) -> None:
    """Register a user who can then `tune login`."""
    from api.services import AccountService

    secret, generated = _new_password(password)
    rt = open_runtime(store)
    with domain_errors():
        user_id = AccountService(rt).create_user(email, secret, role)
    if json:
        _print(
            {"user_id": user_id, "email": email, "role": role} | ({"password": secret} if generated else {}),
            True,
        )
        return
    print(f"created {role} {email} ({user_id})")
    if generated:
        print(f"  password: {secret}  (shown only now)")


@user_app.command(name="list")
def list_users(*, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Every user, oldest first."""
    from cli.output import Column, print_json, print_table
    from storage import layout

    rt = open_runtime(store)
    rt.committed(layout.PLATFORM)
    users = (rt.view_json(layout.users()) or {}).get("users", [])
    if json:
        print_json(users)
    else:
        print_table(
            users, [Column(k) for k in ("user_id", "email", "role", "status", "created_at")], empty="no users"
        )


def _user_command(store: Store, user_id: str, act: Any, json: bool) -> None:
    from storage.layout import PLATFORM

    rt = open_runtime(store)
    with domain_errors():
        view = act(rt.platform, rt.clock())
    rt.committed(PLATFORM)
    _print(view, json, title=user_id)


@user_app.command
def suspend(*, user_id: str, reason: str, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Suspend a user: logins are refused and their tokens revoked; their jobs are left as they are."""
    _user_command(store, user_id, lambda app, at: app.suspend_user(user_id, reason, at), json)


@user_app.command(name="revoke-tokens")
def revoke_tokens(
    *,
    user_id: str,
    reason: str = "revoked by an operator",
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Sign a user out everywhere: every token issued until now is refused (they log in again)."""
    _user_command(store, user_id, lambda app, at: app.revoke_tokens(user_id, reason, at), json)


@user_app.command
def reactivate(*, user_id: str, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Let a suspended user back in."""
    _user_command(store, user_id, lambda app, at: app.reactivate_user(user_id, at), json)


@user_app.command
def quota(
    *,
    user_id: str,
    max_jobs: Annotated[int, Parameter(help="Jobs queued or running at once.")],
    max_dataset_bytes: Annotated[int, Parameter(help="Total size of the user's datasets.")],
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Set a user's limits."""
    _user_command(
        store, user_id, lambda app, at: app.set_quota(user_id, max_jobs, max_dataset_bytes, at), json
    )


# -- prices ------------------------------------------------------------------------------


@price_app.command(name="list")
def list_prices(*, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Prices in force now, and changes scheduled for later."""
    from msgspec import to_builtins

    from cli.output import Column, print_json, print_table

    rt = open_runtime(store)
    with domain_errors():
        view = rt.platform.price_list(rt.clock())
    if json:
        print_json(view)
        return
    rows = [to_builtins(p) | {"when": "now"} for p in view.prices]
    rows += [to_builtins(p) | {"when": "scheduled"} for p in view.scheduled]
    cols = [Column(k) for k in ("gpu_type", "usd_micros_per_hour", "effective_at", "when")]
    print_table(rows, cols, empty="no prices set")
    now = rt.clock()
    served = [
        {
            "base_model": name,
            "prompt_usd_micros_per_mtok": price.prompt_usd_micros_per_mtok,
            "completion_usd_micros_per_mtok": price.completion_usd_micros_per_mtok,
            "effective_at": when.isoformat(),
            "when": "scheduled" if when > now else "set",
        }
        for name, when, price in rt.platform.serving_prices()
    ]
    keys = (
        "base_model",
        "prompt_usd_micros_per_mtok",
        "completion_usd_micros_per_mtok",
        "effective_at",
        "when",
    )
    print_table(served, [Column(k) for k in keys], title="serving, per million tokens", empty="")


_EffectiveAt = Annotated[
    str | None,
    Parameter(help="When it takes effect (ISO 8601, UTC): now or later, never in the past; default now."),
]
"""When a price takes effect (``_utc``); a price is never set in the past."""


@price_app.command(name="set")
def set_price(
    *,
    gpu_type: str,
    usd_per_hour: Annotated[str, Parameter(help="Dollars per GPU-hour, e.g. 2.50 (exact).")],
    effective_at: _EffectiveAt = None,
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Set the price of one GPU type from now (or from a later time).

    A time in the past is refused: usage already metered keeps the price it was metered at.
    """
    from cli.billing import dollars_to_micros
    from cli.output import usd
    from storage.layout import PLATFORM

    micros = dollars_to_micros(usd_per_hour, where="--usd-per-hour")
    rt = open_runtime(store)
    at = rt.clock()
    when = _utc(effective_at) if effective_at else at
    with domain_errors():
        view = rt.platform.set_price(gpu_type, micros, when, at)
    rt.committed(PLATFORM)
    if json:
        _print(view, True)
    else:
        print(f"{gpu_type}: {usd(micros)} per GPU-hour from {view.effective_at.isoformat()}")


@price_app.command(name="serving")
def set_serving_price(
    *,
    base_model: Annotated[str, Parameter(help="A base model's name, or '*' for any without its own price.")],
    prompt_usd_per_mtok: Annotated[str, Parameter(help="Dollars per million prompt tokens, e.g. 0.10.")],
    completion_usd_per_mtok: Annotated[str, Parameter(help="Dollars per million completion tokens.")],
    effective_at: _EffectiveAt = None,
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Set the price of chat completions on one base model from now (or from a later time).

    A time in the past is refused: completions already metered keep the price they were served at.
    """
    from cli.billing import dollars_to_micros
    from cli.output import usd
    from domain.pricing import ServingPrice
    from storage.layout import PLATFORM

    price = ServingPrice(
        dollars_to_micros(prompt_usd_per_mtok, where="--prompt-usd-per-mtok"),
        dollars_to_micros(completion_usd_per_mtok, where="--completion-usd-per-mtok"),
    )
    rt = open_runtime(store)
    at = rt.clock()
    when = _utc(effective_at) if effective_at else at
    with domain_errors():
        rt.platform.set_serving_price(base_model, price, when, at)
    rt.committed(PLATFORM)
    if json:
        _print({"base_model": base_model, **price._asdict(), "effective_at": when.isoformat()}, True)
    else:
        print(
            f"{base_model}: {usd(price.prompt_usd_micros_per_mtok)} per million prompt tokens, "
            f"{usd(price.completion_usd_micros_per_mtok)} per million completion tokens "
            f"from {when.isoformat()}"
        )


def _utc(text: str) -> datetime:
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"not an ISO 8601 time: {text!r}", where="--effective-at") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
