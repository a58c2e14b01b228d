"""The heartbeat transport contract: the same tests over DirectTransport and over Pub/Sub (emulator).

Every heartbeat is delivered at least once, each job's in publication order, in
batches; a batch is acked only after the handler returns; a handler that raises
gets the same heartbeats again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from storage.heartbeats import (
    DirectTransport,
    Heartbeat,
    HeartbeatPublisher,
    HeartbeatPublishError,
    HeartbeatSubscriber,
    HeartbeatTransport,
    decode_heartbeat,
    encode_heartbeat,
    open_heartbeat_transport,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WAIT_S = 20.0


def hb(job: str = "job_a", seq: int = 0, attempt: int = 1, **fields: Any) -> Heartbeat:
    values: dict[str, Any] = {
        "user_id": "u1",
        "job_id": job,
        "attempt": attempt,
        "seq": seq,
        "gpu_type": "h100",
        "gpu_count": 2,
        "gpu_ms_total": 5000 + seq,
        "step": 10 * seq,
        "loss": 2.5 / (seq + 1),
        "tokens": 4096 * seq,
        "at": T0 + timedelta(seconds=5 * seq),
        "final": False,
    }
    return Heartbeat(**(values | fields))


def job_stream(job: str, n: int) -> list[Heartbeat]:
    """``n`` heartbeats of one job over two attempts, the last of each attempt final."""
    half = n // 2
    return [hb(job, s, 1, final=s == half - 1) for s in range(half)] + [
        hb(job, s, 2, final=s == n - half - 1, loss=None) for s in range(n - half)
    ]


class Collector:
    """A handler recording every call; raises on the calls ``fail`` says to."""

    def __init__(self, fail: Callable[[int], bool] = lambda call: False) -> None:
        self.calls: list[list[Heartbeat]] = []
        self._fail = fail
        self._changed = threading.Condition()

    def __call__(self, batch: list[Heartbeat]) -> None:
        with self._changed:
            self.calls.append(batch)
            call = len(self.calls)
            self._changed.notify_all()
        if self._fail(call):
            raise RuntimeError(f"handler failed on call {call}")

    @property
    def delivered(self) -> list[Heartbeat]:
        with self._changed:
            return [h for batch in self.calls for h in batch]

    def wait_for(self, done: Callable[[Collector], bool], timeout: float = WAIT_S) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: done(self), timeout), f"timed out; calls: {self.calls}"

    def wait_keys(self, heartbeats: list[Heartbeat]) -> None:
        want = {h.key for h in heartbeats}
        self.wait_for(lambda c: want <= {h.key for b in c.calls for h in b})


def first_delivery_order(delivered: list[Heartbeat]) -> dict[str, list[tuple[int, int]]]:
    """Per job, (attempt, seq) in the order first delivered (repeats are the consumer's to drop)."""
    seen: set[tuple[str, int, int]] = set()
    order: dict[str, list[tuple[int, int]]] = {}
    for h in delivered:
        if h.key not in seen:
            seen.add(h.key)
            order.setdefault(h.job_id, []).append((h.attempt, h.seq))
    return order


def publication_order(heartbeats: list[Heartbeat]) -> dict[str, list[tuple[int, int]]]:
    order: dict[str, list[tuple[int, int]]] = {}
    for h in heartbeats:
        order.setdefault(h.job_id, []).append((h.attempt, h.seq))
    return order


class Endpoints:
    """Opens publishers and subscribers on a transport and closes them all after the test."""

    def __init__(self, transport: HeartbeatTransport) -> None:
        self.transport = transport
        self._open: list[HeartbeatPublisher | HeartbeatSubscriber] = []

    def publisher(self) -> HeartbeatPublisher:
        self._open.append(pub := self.transport.publisher())
        return pub

    def subscribe(self, handler: Collector, **options: Any) -> HeartbeatSubscriber:
        self._open.append(sub := self.transport.subscriber(**options))
        sub.start(handler)
        return sub

    def publish_all(self, heartbeats: list[Heartbeat]) -> None:
        with self.transport.publisher() as pub:
            for h in heartbeats:
                pub.publish(h)
            pub.flush(timeout=WAIT_S)

    def close(self) -> None:
        for endpoint in reversed(self._open):
            endpoint.close()


@pytest.fixture
def ends(transport: HeartbeatTransport) -> Iterator[Endpoints]:
    endpoints = Endpoints(transport)
    yield endpoints
    endpoints.close()


# --- the contract, on every transport --------------------------------------------------------------


def test_every_heartbeat_arrives_at_least_once_in_per_job_order(ends: Endpoints) -> None:
    streams = {job: job_stream(job, 60) for job in ("job_a", "job_b", "job_c", "job_d")}
    handler = Collector()
    ends.subscribe(handler)

    def run(stream: list[Heartbeat]) -> None:  # one runner per job, all at once
        pub = ends.publisher()
        for h in stream:
            pub.publish(h)
        pub.flush(timeout=WAIT_S)

    threads = [threading.Thread(target=run, args=(s,)) for s in streams.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = [h for s in streams.values() for h in s]
    handler.wait_keys(published)

    delivered = {h.key: h for h in handler.delivered}
    assert all(delivered[h.key] == h for h in published)  # every field, loss=None and final included
    assert first_delivery_order(handler.delivered) == publication_order(published)


def test_the_handler_gets_batches_of_at_most_max_batch(ends: Endpoints) -> None:
    published = job_stream("job_a", 100) + job_stream("job_b", 100)
    ends.publish_all(published)
    handler = Collector()

    ends.subscribe(handler, max_batch=25)
    handler.wait_keys(published)

    assert max(len(b) for b in handler.calls) <= 25
    assert max(len(b) for b in handler.calls) > 1
    assert first_delivery_order(handler.delivered) == publication_order(published)


@pytest.mark.pubsub
def test_a_backlog_comes_in_batches_bigger_than_one_emulator_pull(
    pubsub_transport: HeartbeatTransport,
) -> None:
    """The emulator answers at most 100 messages a pull (and holds back a job's next messages
    while its earlier ones are leased); the ledger commits once per user per batch, so the
    subscriber fills a batch from more than one pull, in order, when many jobs are waiting."""
    ends = Endpoints(pubsub_transport)
    try:
        published = [h for job in range(200) for h in job_stream(f"job_{job}", 3)]
        ends.publish_all(published)
        handler = Collector()
        ends.subscribe(handler, max_batch=500)
        handler.wait_keys(published)
    finally:
        ends.close()
    assert max(len(b) for b in handler.calls) > 100
    assert max(len(b) for b in handler.calls) <= 500
    assert first_delivery_order(handler.delivered) == publication_order(published)


def test_a_handler_that_raises_gets_the_same_heartbeats_again_in_order(ends: Endpoints) -> None:
    published = job_stream("job_a", 30) + job_stream("job_b", 30)
    ends.publish_all(published)
    handler = Collector(fail=lambda call: call <= 2)

    ends.subscribe(handler, max_batch=10, retry_delay_s=0.01)
    handler.wait_keys(published)

    assert handler.calls[0] == handler.calls[1] == handler.calls[2]
    assert first_delivery_order(handler.delivered[2 * len(handler.calls[0]) :]) == publication_order(
        published
    )


def test_heartbeats_are_acked_only_after_the_handler_returns(ends: Endpoints) -> None:
    published = job_stream("job_a", 20) + job_stream("job_b", 20)
    ends.publish_all(published)
    failing = Collector(fail=lambda call: True)
    first = ends.subscribe(failing, max_batch=10, retry_delay_s=0.01)
    failing.wait_for(lambda c: len(c.calls) >= 2)

    first.close()
    handler = Collector()
    ends.subscribe(handler)

    handler.wait_keys(published)  # including the batch the failing handler saw, never acked


def test_acked_heartbeats_are_not_delivered_again(ends: Endpoints) -> None:
    published = job_stream("job_a", 20)
    ends.publish_all(published)
    first = Collector()
    sub = ends.subscribe(first)
    first.wait_keys(published)
    sub.close()
    marker = hb("job_a", 99, 3, final=True)

    ends.publish_all([marker])
    second = Collector()
    ends.subscribe(second)
    second.wait_keys([marker])
    time.sleep(0.3)

    assert second.delivered == [marker]


def test_close_finishes_and_acks_the_batch_in_hand(ends: Endpoints) -> None:
    published = job_stream("job_a", 20)
    ends.publish_all(published)
    entered, finished = threading.Event(), threading.Event()

    def slow(batch: list[Heartbeat]) -> None:
        entered.set()
        time.sleep(0.3)
        finished.set()
        handled.extend(batch)

    handled: list[Heartbeat] = []
    sub = ends.transport.subscriber(max_batch=5)
    sub.start(slow)
    assert entered.wait(WAIT_S)
    sub.close()

    assert finished.is_set() and len(handled) == 5
    rest = Collector()
    ends.subscribe(rest)
    rest.wait_keys(published[5:])
    time.sleep(0.3)
    assert {h.key for h in rest.delivered} == {h.key for h in published[5:]}


def test_publishing_after_close_is_refused(ends: Endpoints) -> None:
    pub = ends.publisher()
    pub.close()

    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(hb())


def test_a_subscriber_starts_once(ends: Endpoints) -> None:
    sub = ends.subscribe(Collector())

    with pytest.raises(RuntimeError, match="already started"):
        sub.start(Collector())


# --- Pub/Sub specifics ------------------------------------------------------------------------------


@pytest.mark.pubsub
def test_a_message_that_is_not_a_heartbeat_is_dropped_without_blocking_its_job(
    pubsub_transport: HeartbeatTransport,
) -> None:
    from google.cloud import pubsub_v1

    raw = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    topic = raw.topic_path(pubsub_transport.project, pubsub_transport.topic)  # type: ignore[attr-defined]
    raw.publish(topic, b"not a heartbeat", ordering_key="job_a").result()
    raw.publish(topic, encode_heartbeat(hb("job_a", 0)), ordering_key="job_a").result()
    raw.transport.close()
    handler = Collector()

    with pubsub_transport.subscriber() as sub:
        sub.start(handler)
        handler.wait_keys([hb("job_a", 0)])

    assert handler.delivered == [hb("job_a", 0)]
    assert sub.dropped == 1  # type: ignore[attr-defined]


@pytest.mark.pubsub
def test_failed_publishes_are_reported_by_flush_and_can_be_republished(pubsub_emulator: str) -> None:
    name = f"hb-{uuid.uuid4().hex[:16]}"
    transport = open_heartbeat_transport(f"pubsub://test-project/{name}/{name}-sub")  # not created
    beats = [hb("job_a", 0), hb("job_a", 1)]

    with transport.publisher() as pub:
        for h in beats:
            pub.publish(h)
        with pytest.raises(HeartbeatPublishError) as failure:
            pub.flush(timeout=WAIT_S)
        assert sorted(h.key for h in failure.value.failed) == [h.key for h in beats]

        transport.create_resources()  # type: ignore[attr-defined]
        for h in failure.value.failed:
            pub.publish(h)
        pub.flush(timeout=WAIT_S)


@pytest.mark.pubsub
def test_create_resources_is_idempotent_and_refuses_an_unordered_subscription(pubsub_emulator: str) -> None:
    from google.cloud import pubsub_v1

    name = f"hb-{uuid.uuid4().hex[:16]}"
    open_heartbeat_transport(f"pubsub://test-project/{name}/{name}-sub", create=True)
    open_heartbeat_transport(f"pubsub://test-project/{name}/{name}-sub", create=True)
    with pubsub_v1.SubscriberClient() as client:
        client.create_subscription(
            request={
                "name": client.subscription_path("test-project", f"{name}-plain"),
                "topic": f"projects/test-project/topics/{name}",
            }
        )

    with pytest.raises(ValueError, match="without message ordering"):
        open_heartbeat_transport(f"pubsub://test-project/{name}/{name}-plain", create=True)


# --- codec and URLs (no transport needed) ---------------------------------------------------------


def test_a_heartbeat_round_trips_through_json() -> None:
    for h in (hb(), hb(seq=3, loss=None, final=True)):
        assert decode_heartbeat(encode_heartbeat(h)) == h
    assert hb().key == ("job_a", 1, 0)


@pytest.mark.parametrize(
    "change",
    [{"at": "2026-11-29T12:00:00"}, {"gpu_ms_total": -1}, {"seq": "1"}, {"extra": 1}, {"loss": "low"}],
    ids=["naive time", "negative gpu_ms", "string seq", "unknown field", "string loss"],
)
def test_a_malformed_heartbeat_is_refused(change: dict[str, Any]) -> None:
    data = msgspec.json.decode(encode_heartbeat(hb())) | change

    with pytest.raises(msgspec.ValidationError):
        decode_heartbeat(msgspec.json.encode(data))


def test_direct_urls_name_one_shared_transport_each() -> None:
    default = open_heartbeat_transport("direct://")

    assert open_heartbeat_transport("direct://") is default
    assert open_heartbeat_transport("direct://other") is not default
    assert isinstance(default, DirectTransport)


def test_a_pubsub_url_names_project_topic_and_subscription() -> None:
    transport = open_heartbeat_transport("pubsub://my-proj/heartbeats/ledger")

    assert (transport.project, transport.topic, transport.subscription) == (  # type: ignore[attr-defined]
        "my-proj",
        "heartbeats",
        "ledger",
    )
    assert transport.url == "pubsub://my-proj/heartbeats/ledger"


@pytest.mark.parametrize(
    "url",
    [
        "pubsub://p/t",
        "pubsub://p/ab/sub",
        "pubsub://p/1topic/sub",
        "pubsub:///topic/sub",
        "direct://a/b",
        "kafka://x",
        "heartbeats",
    ],
)
def test_a_bad_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"heartbeat|Pub/Sub|direct"):
        open_heartbeat_transport(url)
