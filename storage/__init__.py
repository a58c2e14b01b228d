"""Object storage: one Bucket interface, a local folder and GCS behind it."""

from storage.bucket import (
    AlreadyExists,
    Bucket,
    BucketError,
    ObjectNotFound,
    ObjectStat,
    PreconditionFailed,
    check_name,
    check_prefix,
)
from storage.local import LocalBucket
from storage.open import open_bucket

__all__ = [
    "AlreadyExists",
    "Bucket",
    "BucketError",
    "GcsBucket",
    "LocalBucket",
    "ObjectNotFound",
    "ObjectStat",
    "PreconditionFailed",
    "check_name",
    "check_prefix",
    "open_bucket",
]


def __getattr__(name: str) -> object:
    """``storage.GcsBucket`` imports google-cloud-storage only when first used."""
    if name == "GcsBucket":
        from storage.gcs import GcsBucket

        return GcsBucket
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
