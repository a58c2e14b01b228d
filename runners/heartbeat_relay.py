"""Heartbeats across a process boundary: a runner's stdout, relayed by whoever started it.

A ``direct://`` transport lives inside one process, but a local job runner is a child
process of the dispatcher. So the run.yaml may name ``heartbeat_url: "stdout:"``: the
runner then writes each heartbeat as one JSON line on its stdout (``StreamPublisher``;
nothing else goes there), and the launch backend that reads that pipe hands every line
that decodes to a ``Heartbeat`` on (``relay_heartbeats``), e.g. into the in-process
transport the ledger subscribes to. Any other URL goes to
``storage.heartbeats.open_heartbeat_transport`` (``pubsub://...`` for a cluster).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import BinaryIO

import msgspec

from storage.heartbeats import Heartbeat, HeartbeatPublisher, decode_heartbeat, encode_heartbeat

__all__ = ["STDOUT_URL", "StreamPublisher", "open_publisher", "relay_heartbeats"]

log = logging.getLogger(__name__)

STDOUT_URL = "stdout:"
"""Heartbeats as JSON lines on the runner's stdout, for the parent process to relay."""


class StreamPublisher(HeartbeatPublisher):
    """Writes each heartbeat as one JSON line to a binary stream (flushed per line); thread-safe."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._closed = False

    def publish(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("publisher is closed")
            self._stream.write(encode_heartbeat(heartbeat) + b"\n")
            self._stream.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to wait for: ``publish`` has already written and flushed the line."""

    def close(self) -> None:
        with self._lock:
            self._closed = True


def open_publisher(url: str) -> HeartbeatPublisher:
    """A publisher for the run.yaml's ``heartbeat_url`` (``stdout:`` or a transport URL)."""
    if url == STDOUT_URL:
        return StreamPublisher(sys.stdout.buffer)
    from storage.heartbeats import open_heartbeat_transport

    return open_heartbeat_transport(url).publisher()


def relay_heartbeats(lines: Iterable[bytes], sink: Callable[[Heartbeat], None]) -> int:
    """Hand every heartbeat line to ``sink`` (others are logged and skipped); return how many."""
    count = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            heartbeat = decode_heartbeat(text)
        except msgspec.DecodeError:
            log.warning("runner printed a line that is not a heartbeat: %.200r", text)
            continue
        try:
            sink(heartbeat)
        except Exception:  # one heartbeat the sink refused must not stop the relay of the rest
            log.exception("heartbeat sink failed on %s", heartbeat.key)
        count += 1
    return count
