"""``open_bucket(url)``: the one place a bucket URL becomes a Bucket."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from storage.bucket import Bucket

__all__ = ["open_bucket"]

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
