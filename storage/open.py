"""``open_bucket(url)``: the one place a bucket URL becomes a Bucket; where the default one is.

``home_from_env`` is the one place the ``TUNE_HOME`` default (``~/.tune``) is spelled, and
``bucket_url_from_env`` the one place the default bucket (``file://$TUNE_HOME/bucket``) is:
``runtime.settings.Settings.from_env`` and the eventsourcing ``Factory`` both use them.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from storage.bucket import Bucket

__all__ = ["bucket_url_from_env", "home_from_env", "open_bucket"]

DEFAULT_HOME = "~/.tune"


def home_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """``$TUNE_HOME`` (default ``~/.tune``), absolute."""
    return Path(env.get("TUNE_HOME") or DEFAULT_HOME).expanduser().resolve()


def bucket_url_from_env(env: Mapping[str, str] = os.environ) -> str:
    """``$TUNE_BUCKET``, else the folder ``bucket`` in the home."""
    return env.get("TUNE_BUCKET") or f"file://{home_from_env(env) / 'bucket'}"

_TRUE = ("1", "true", "yes")


def open_bucket(url: str) -> Bucket:
    """``file:///abs/path[?fsync=1]`` or a bare path -> LocalBucket; ``gs://bucket[/prefix]`` -> GcsBucket."""
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
        fsync = query.get("fsync", ["0"])[-1].lower() in _TRUE
        return LocalBucket(Path(urllib.parse.unquote(parts.path)), fsync=fsync)
    if "://" in url:
        raise ValueError(f"unsupported bucket URL (use file:///abs/path or gs://bucket[/prefix]): {url!r}")
    return LocalBucket(Path(url))
