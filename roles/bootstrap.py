"""What ``tune serve`` does on a new home before it serves: prices, base models, a first user.

Each step is idempotent: on a platform that has them already it adds nothing. The first
user's password is handed to the operator once, and never to a log (``hand_over``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO

from api.services.accounts import AccountService, FirstUser
from runtime.context import Runtime
from storage.layout import PLATFORM
from storage.open import ensure_home

__all__ = ["PASSWORD_FILE", "bootstrap", "hand_over", "login_hint"]

PASSWORD_FILE = "first_admin_password"
"""Where, in the home, the first admin's password is written when no terminal is there to show it."""


def bootstrap(runtime: Runtime) -> FirstUser | None:
    """Default GPU and serving prices, the built-in base-model catalogue, and an admin if there is no user.

    Returns the first user's credentials when one was made (hand them over once), else None.
    """
    from domain.base_models import CATALOGUE

    at = runtime.clock()
    runtime.platform.ensure_default_prices(at)
    runtime.platform.ensure_default_serving_prices(at)
    runtime.platform.ensure_base_models(((m.name, m.kind, m.source) for m in CATALOGUE.values()), at)
    runtime.committed(PLATFORM)
    return AccountService(runtime).ensure_first_user()


def hand_over(user: FirstUser, api_url: str, home: Path, stream: TextIO) -> Path | None:
    """Tell the operator on ``stream`` how to log in as the first user, keeping the password out of logs.

    On an interactive terminal (``stream.isatty()``) the password is printed, once. Otherwise
    (``tune serve > serve.log``, a service manager's journal) it is written to
    ``home/first_admin_password`` (mode 0600, in the 0700 home) and only that path is printed.

    Returns:
        The file written, or None when the password went to the terminal.
    """
    path: Path | None = None
    if not _is_terminal(stream):
        path = ensure_home(home) / PASSWORD_FILE
        _write_private(path, user.password + "\n")
    print(login_hint(user, api_url, password_file=path), file=stream, flush=True)
    return path


def login_hint(user: FirstUser, api_url: str, *, password_file: Path | None = None) -> str:
    """How to log in as the first user: with the password itself, or the file that holds it."""
    login = f"tune --api-url {api_url} login --email {user.email}"
    if password_file is None:
        return (
            f"created the first user (admin): {user.email}\n"
            f"  password: {user.password}\n"
            f"log in with:  {login}\n"
            "(the password is shown only now; create more users with `tune admin user create`)"
        )
    return (
        f"created the first user (admin): {user.email}\n"
        f"  password: not shown (this output is no terminal); it is in {password_file},"
        " readable by this account only\n"
        f"log in with:  {login} < {password_file}\n"
        "(delete that file once you have logged in; create more users with `tune admin user create`)"
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file of mode 0600 (a file left by an earlier home is replaced, not reused)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
