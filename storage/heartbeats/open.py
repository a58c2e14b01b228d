"""``open_heartbeat_transport(url)``: the one place a heartbeat URL becomes a transport."""

from __future__ import annotations

import re
import threading

from storage.heartbeats.direct import DirectTransport
from storage.heartbeats.transport import HeartbeatTransport

__all__ = ["open_heartbeat_transport"]

_DIRECT_NAME = re.compile(r"[A-Za-z0-9_-]*")
_RESOURCE = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")  # Pub/Sub topic and subscription ids
_direct: dict[str, DirectTransport] = {}
_direct_lock = threading.Lock()


def open_heartbeat_transport(url: str, *, create: bool = False) -> HeartbeatTransport:
    """``direct://[name]`` -> the process-wide DirectTransport of that name (so a publisher and a
    subscriber opened from the same URL meet); ``pubsub://project/topic/subscription`` ->
    PubSubTransport, whose topic and ordered subscription are created first when ``create``.
    """
    if url.startswith("direct://"):
        name = url.removeprefix("direct://")
        if not _DIRECT_NAME.fullmatch(name):
            raise ValueError(f"direct transport name must be letters, digits, '-' or '_': {url!r}")
        with _direct_lock:
            return _direct.setdefault(name, DirectTransport(name))
    if url.startswith("pubsub://"):
        parts = url.removeprefix("pubsub://").split("/")
        if len(parts) != 3 or not parts[0] or not all(_RESOURCE.fullmatch(p) for p in parts[1:]):
            raise ValueError(
                "Pub/Sub heartbeat URL must be pubsub://project/topic/subscription (topic and subscription "
                f"start with a letter, 3-255 characters): {url!r}"
            )
        from storage.heartbeats.pubsub import PubSubTransport  # google-cloud-pubsub only when used

        transport = PubSubTransport(*parts)
        if create:
            transport.create_resources()
        return transport
    raise ValueError(f"unsupported heartbeat transport URL (use direct:// or pubsub://...): {url!r}")
