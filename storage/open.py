"""``open_bucket(url)``: the one place a bucket URL becomes a Bucket; where the default one is.

``home_from_env`` is the one place the ``TUNE_HOME`` default (``~/.tune``) is spelled, and
``bucket_url_from_env`` the one place the default bucket (``file://$TUNE_HOME/bucket``) is:
``runtime.settings.Settings.from_env`` and the eventsourcing ``Factory`` both use them.
``ensure_home`` makes the home private (0700): what writes into it (the API's secret, the
first admin's password, ``tune serve``) calls it first; ``load_or_create_secret`` keeps a
generated secret there (the API's JWT key, the platform's heartbeat key), and
``load_or_create_private_file`` any other (the event store's signing keys, ``keys/<role>.ed25519``).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

from storage.bucket import Bucket

__all__ = [
    "bucket_url_from_env",
    "ensure_home",
    "home_from_env",
    "load_or_create_private_file",
    "load_or_create_secret",
    "open_bucket",
]

log = logging.getLogger(__name__)

DEFAULT_HOME = "~/.tune"


def home_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """``$TUNE_HOME`` (default ``~/.tune``), absolute."""
    return Path(env.get("TUNE_HOME") or DEFAULT_HOME).expanduser().resolve()


def bucket_url_from_env(env: Mapping[str, str] = os.environ) -> str:
    """``$TUNE_BUCKET``, else the folder ``bucket`` in the home."""
    return env.get("TUNE_BUCKET") or f"file://{home_from_env(env) / 'bucket'}"


def ensure_home(home: Path) -> Path:
    """The home folder, created 0700 (each missing level), or an existing one narrowed to 0700.

    The home holds the bucket (password hashes, datasets, weights) and the API's secret:
    no other account on the machine may list or read it. An existing home that others can
    reach is narrowed, with a warning; one this account may not chmod is only warned about.
    """
    from storage.local import DIR_MODE, make_private_dirs

    make_private_dirs(home)
    mode = stat.S_IMODE(os.stat(home).st_mode)
    if mode & 0o077:
        try:
            os.chmod(home, DIR_MODE)
            log.warning("%s was open to other accounts (mode %04o): narrowed to 0700", home, mode)
        except PermissionError:
            log.warning("%s is open to other accounts (mode %04o) and cannot be narrowed", home, mode)
    return home


def load_or_create_secret(home: Path, name: str) -> str:
    """The secret kept in ``home/name`` (mode 0600, in a 0700 home), created on first use."""
    made = load_or_create_private_file(home, name, lambda: (secrets.token_urlsafe(48) + "\n").encode("ascii"))
    return made.decode("ascii").strip()


def load_or_create_private_file(home: Path, name: str, make: Callable[[], bytes]) -> bytes:
    """The bytes kept in ``home/name`` (mode 0600, its folders 0700), written from ``make()`` on first use.

    ``name`` may hold folders (``keys/root.ed25519``). Two processes creating it at once both get
    the winner's bytes (the file is published whole by a link, never seen half written).
    """
    path = home / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    from storage.local import make_private_dirs

    ensure_home(home)
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(make())
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process won the race: use its bytes
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def open_bucket(url: str) -> Bucket:
    """``file:///abs/path[?fsync=0]`` or a bare path -> LocalBucket; ``gs://bucket[/prefix]`` -> GcsBucket.

    A local bucket fsyncs every write (durable) unless ``?fsync=0`` says otherwise (tests, benches).
    """
    if url.startswith("gs://"):
        from storage.gcs import GcsBucket  # google-cloud-storage is imported only when used

        return GcsBucket(url)
    from storage.local import LocalBucket

    if url.startswith("file:"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must name a local absolute path (file:///abs/path): {url!r}")
        query = urllib.parse.parse_qs(parts.query)
        unknown = set(query) - {"fsync"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in bucket URL {url!r}")
        fsync = query.get("fsync", ["1"])[-1].lower()
        if fsync not in _TRUE + _FALSE:
            raise ValueError(f"fsync is 1 (the default) or 0, not {fsync!r}, in bucket URL {url!r}")
        return LocalBucket(Path(urllib.parse.unquote(parts.path)), fsync=fsync in _TRUE)
    if "://" in url:
        raise ValueError(f"unsupported bucket URL (use file:///abs/path or gs://bucket[/prefix]): {url!r}")
    return LocalBucket(Path(url))
