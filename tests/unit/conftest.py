"""Unit tests' buckets skip fsync: they check logic, not power-loss safety (tests/contract runs durable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import LocalBucket


@pytest.fixture
def local_bucket(tmp_path: Path) -> LocalBucket:
    """The root fixture's bucket, not durable (``fsync=False``): a unit test never loses power."""
    return LocalBucket(tmp_path / "bucket", fsync=False)
