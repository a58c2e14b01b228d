"""Runtime settings, read from the environment once (``Settings.from_env``).

=========================  ===============================================  ==========================
variable                   meaning                                          default
=========================  ===============================================  ==========================
``TUNE_HOME``              the server's home folder                         ``~/.tune``
``TUNE_BUCKET``            ``file:///abs/path`` or ``gs://bucket[/prefix]``  ``file://$TUNE_HOME/bucket``
``TUNE_JWT_SECRET``        HMAC secret for tokens                           generated, kept in
                                                                            ``$TUNE_HOME/jwt_secret`` (0600)
``TUNE_TOKEN_TTL_S``       token lifetime in seconds                        ``86400``
``TUNE_MAX_UPLOAD_BYTES``  largest dataset upload                           ``1073741824`` (1 GiB)
``TUNE_RATE_LIMIT``        requests per user per minute                     ``600``
``TUNE_WAIT_S``            how long a write waits for its projection        ``10``
=========================  ===============================================  ==========================
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "load_or_create_secret"]

_SECRET_FILE = "jwt_secret"


def load_or_create_secret(home: Path) -> str:
    """The JWT secret kept in ``home/jwt_secret`` (mode 0600), created on first use."""
    path = home / _SECRET_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    return secret


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer (got {text!r})") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive (got {value})")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything ``create_app`` needs; tests build one directly."""

    home: Path
    bucket_url: str
    jwt_secret: str = field(repr=False)
    token_ttl_s: int = 86_400
    max_upload_bytes: int = 1 << 30
    rate_limit_per_minute: int = 600
    projection_wait_s: float = 10.0
    debug: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        """Read the ``TUNE_*`` variables (see the module docstring)."""
        home = Path(os.environ.get("TUNE_HOME") or Path.home() / ".tune").expanduser().resolve()
        bucket_url = os.environ.get("TUNE_BUCKET") or f"file://{home / 'bucket'}"
        secret = os.environ.get("TUNE_JWT_SECRET") or load_or_create_secret(home)
        return cls(
            home=home,
            bucket_url=bucket_url,
            jwt_secret=secret,
            token_ttl_s=_int_env("TUNE_TOKEN_TTL_S", 86_400),
            max_upload_bytes=_int_env("TUNE_MAX_UPLOAD_BYTES", 1 << 30),
            rate_limit_per_minute=_int_env("TUNE_RATE_LIMIT", 600),
            projection_wait_s=float(_int_env("TUNE_WAIT_S", 10)),
        )
