"""The heartbeat transports the contract suites run on: direct, and Pub/Sub on Google's emulator."""

from __future__ import annotations

import uuid

import pytest

from storage.heartbeats import DirectTransport, HeartbeatTransport, open_heartbeat_transport


@pytest.fixture
def pubsub_transport(pubsub_emulator: str) -> HeartbeatTransport:
    """A fresh topic and ordered subscription on the session's emulator."""
    name = f"hb-{uuid.uuid4().hex[:16]}"
    return open_heartbeat_transport(f"pubsub://test-project/{name}/{name}-sub", create=True)


@pytest.fixture(params=["direct", pytest.param("pubsub", marks=pytest.mark.pubsub)])
def transport(request: pytest.FixtureRequest) -> HeartbeatTransport:
    """Each transport in turn, fresh for the test."""
    if request.param == "direct":
        return DirectTransport(f"test-{uuid.uuid4().hex[:8]}")
    return request.getfixturevalue("pubsub_transport")  # type: ignore[no-any-return]
