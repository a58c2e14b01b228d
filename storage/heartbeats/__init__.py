"""Heartbeat transports: runners publish ``Heartbeat``s, the ledger subscribes.

``open_heartbeat_transport(url)`` gives a ``HeartbeatTransport``: ``direct://``
(in-process queue, the embedded default) or ``pubsub://project/topic/subscription``
(Google Cloud Pub/Sub; google-cloud-pubsub is imported only when used). Both
deliver at least once, in order per job, in batches, acking after the handler.
``storage.heartbeats.archive``: the ledger's raw heartbeat archive objects.
"""

from storage.heartbeats.archive import (
    ARCHIVE_FORMAT,
    ARCHIVE_FORMAT_V1,
    Archive,
    ArchivedAttempt,
    ArchiveHeader,
    decode_archive,
    encode_archive,
)
from storage.heartbeats.direct import DirectTransport
from storage.heartbeats.heartbeat import (
    Heartbeat,
    attempt_secret,
    canonical_bytes,
    decode_heartbeat,
    encode_heartbeat,
    sign_heartbeat,
    verify_heartbeat,
)
from storage.heartbeats.open import open_heartbeat_transport
from storage.heartbeats.transport import (
    Handler,
    HeartbeatPublisher,
    HeartbeatPublishError,
    HeartbeatSubscriber,
    HeartbeatTransport,
    TransportError,
)

__all__ = [
    "ARCHIVE_FORMAT",
    "ARCHIVE_FORMAT_V1",
    "Archive",
    "ArchiveHeader",
    "ArchivedAttempt",
    "DirectTransport",
    "Handler",
    "Heartbeat",
    "HeartbeatPublishError",
    "HeartbeatPublisher",
    "HeartbeatSubscriber",
    "HeartbeatTransport",
    "PubSubPublisher",
    "PubSubSubscriber",
    "PubSubTransport",
    "TransportError",
    "attempt_secret",
    "canonical_bytes",
    "create_topic_and_subscription",
    "decode_archive",
    "decode_heartbeat",
    "encode_archive",
    "encode_heartbeat",
    "open_heartbeat_transport",
    "sign_heartbeat",
    "verify_heartbeat",
]

_PUBSUB = ("PubSubPublisher", "PubSubSubscriber", "PubSubTransport", "create_topic_and_subscription")


def __getattr__(name: str) -> object:
    """The Pub/Sub names import google-cloud-pubsub only when first used."""
    if name in _PUBSUB:
        from storage.heartbeats import pubsub

        return getattr(pubsub, name)
    raise AttributeError(f"module 'storage.heartbeats' has no attribute {name!r}")
