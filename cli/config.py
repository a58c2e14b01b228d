"""Where the CLI keeps its state: the server URL, the login token, the model cache.

``credentials.json`` lives in ``$TUNE_CONFIG_DIR`` (tests, scripts), else
``$XDG_CONFIG_HOME/tune``, else ``~/.config/tune``; it is written with mode 0600
inside a 0700 folder. It maps each API URL to the session of the user logged in
there, so switching ``--api-url`` never sends one server's token to another.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.errors import CliError

__all__ = [
    "DEFAULT_API_URL",
    "Credentials",
    "cache_dir",
    "clear_credentials",
    "config_dir",
    "credentials_path",
    "load_credentials",
    "normalize_url",
    "save_credentials",
]

DEFAULT_API_URL = "http://127.0.0.1:8600"
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def config_dir() -> Path:
    """The CLI's configuration folder (not created here)."""
    if override := os.environ.get("TUNE_CONFIG_DIR"):
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tune"


def cache_dir() -> Path:
    """Where downloaded model weights are cached (``$TUNE_CACHE_DIR`` or the XDG cache folder)."""
    if override := os.environ.get("TUNE_CACHE_DIR"):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tune"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def normalize_url(url: str) -> str:
    """The key a server is stored under: no trailing slash."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"API URL must start with http:// or https:// (got {url!r})", where="--api-url")
    return url


class Credentials:
    """One login on one server."""

    __slots__ = ("email", "expires_at", "token", "user_id")

    def __init__(self, *, token: str, user_id: str, email: str = "", expires_at: str | None = None) -> None:
        self.token = token
        self.user_id = user_id
        self.email = email
        self.expires_at = expires_at

    def expired(self, now: datetime | None = None) -> bool:
        if not self.expires_at:
            return False
        try:
            expiry = datetime.fromisoformat(self.expires_at.replace("Z", "+00:00"))
        except ValueError:
            return False
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        return expiry <= (now or datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "user_id": self.user_id,
            "email": self.email,
            "expires_at": self.expires_at,
        }


def _read_all() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}; delete it and run `tune login`") from exc
    servers = data.get("servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def _write_all(servers: dict[str, Any]) -> None:
    path = credentials_path()
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"servers": servers}, fh, indent=2, sort_keys=True)
        os.chmod(tmp, _FILE_MODE)  # an inherited umask or an old file never widens it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_credentials(api_url: str) -> Credentials | None:
    """The stored login for ``api_url``, or None."""
    entry = _read_all().get(normalize_url(api_url))
    if not isinstance(entry, dict) or not entry.get("token") or not entry.get("user_id"):
        return None
    return Credentials(
        token=str(entry["token"]),
        user_id=str(entry["user_id"]),
        email=str(entry.get("email") or ""),
        expires_at=entry.get("expires_at"),
    )


def save_credentials(api_url: str, creds: Credentials) -> Path:
    """Store ``creds`` for ``api_url`` (mode 0600) and return the file's path."""
    servers = _read_all()
    servers[normalize_url(api_url)] = creds.to_dict()
    _write_all(servers)
    return credentials_path()


def clear_credentials(api_url: str) -> bool:
    """Forget the login for ``api_url``; True if there was one."""
    servers = _read_all()
    if servers.pop(normalize_url(api_url), None) is None:
        return False
    _write_all(servers)
    return True
