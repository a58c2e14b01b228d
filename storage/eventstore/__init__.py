"""eventsourcing persistence on a Bucket: ``PERSISTENCE_MODULE=storage.eventstore``.

A partition (``users/<user_id>/events/``, ``platform/events/``: ``storage.layout``) is a log of
create-only commit objects ``<seq:012d>.json``, one per ``insert_events``
batch, each carrying the hash of the one before (``verify_chain`` audits it).

Build an application on a bucket object with ``open_application(AppClass,
bucket, partition)`` (or ``open_platform`` / ``open_user``); or set
``PERSISTENCE_MODULE``, ``TUNE_BUCKET`` and ``TUNE_PARTITION`` and let the
library construct ``Factory``.
"""

from storage.eventstore.chain import ChainProblem, ChainReport, verify_chain
from storage.eventstore.factory import (
    PERSISTENCE_MODULE,
    Factory,
    application_env,
    check_partition,
    open_application,
    open_platform,
    open_user,
    register_bucket,
    resolve_bucket,
)
from storage.eventstore.recorders import (
    BucketAggregateRecorder,
    BucketApplicationRecorder,
    BucketProcessRecorder,
    BucketTrackingRecorder,
    log_of,
    pinned_reads,
)

__all__ = [
    "PERSISTENCE_MODULE",
    "BucketAggregateRecorder",
    "BucketApplicationRecorder",
    "BucketProcessRecorder",
    "BucketTrackingRecorder",
    "ChainProblem",
    "ChainReport",
    "Factory",
    "application_env",
    "check_partition",
    "log_of",
    "open_application",
    "open_platform",
    "open_user",
    "pinned_reads",
    "register_bucket",
    "resolve_bucket",
    "verify_chain",
]
