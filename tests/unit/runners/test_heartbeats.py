"""The heartbeat emitter (sequence, GPU time on a monotonic clock, final beat) and the stdout relay."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from runners.heartbeat_emitter import AttemptIdentity, HeartbeatEmitter, Progress
from runners.heartbeat_relay import StreamPublisher, relay_heartbeats
from storage.heartbeats import Heartbeat
from tests.unit.runners.builders import RecordingPublisher, wait_for

WHO = AttemptIdentity("usr_1", "job_1", 2, "h100-80gb", 4)
AT = datetime(2026, 3, 1, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.ns = 5_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, ms: float) -> None:
        self.ns += int(ms * 1_000_000)


def make(publisher: RecordingPublisher, clock: FakeMonotonic, **kw) -> HeartbeatEmitter:
    return HeartbeatEmitter(publisher, WHO, interval_s=10, clock=lambda: AT, monotonic_ns=clock, **kw)


def test_heartbeats_carry_the_attempt_a_growing_seq_and_its_cumulative_gpu_ms() -> None:
    publisher, clock = RecordingPublisher(), FakeMonotonic()
    progress = Progress(7, 0.5, 900)
    emitter = make(publisher, clock, progress=lambda: progress)
    emitter.start(thread=False)
    emitter.hold_gpu()
    clock.advance(1500.7)
    first = emitter.beat()
    clock.advance(999.6)
    second = emitter.beat()
    clock.advance(10)
    final = emitter.close()

    # seq 1 is sent by start(): the ledger knows the attempt before its first interval is spent
    assert [h.seq for h in publisher.heartbeats] == [1, 2, 3, 4]
    assert [h.gpu_ms_total for h in publisher.heartbeats] == [0, 1500, 2500, 2510]
    identity = (first.user_id, first.job_id, first.attempt, first.gpu_type, first.gpu_count, first.lease)
    assert identity == tuple(WHO)
    assert (second.step, second.loss, second.tokens, second.at) == (7, 0.5, 900, AT)
    assert final.final and not first.final and not second.final
    assert emitter.gpu_ms == 2510  # the whole time, rounding included, never more


def test_gpu_time_counts_only_while_the_gpu_is_held() -> None:
    publisher, clock = RecordingPublisher(), FakeMonotonic()
    emitter = make(publisher, clock)
    emitter.start(thread=False)
    clock.advance(5000)  # copying files in
    assert emitter.beat().gpu_ms_total == 0
    emitter.hold_gpu()
    clock.advance(2000)
    emitter.hold_gpu()  # holding twice changes nothing
    clock.advance(1000)
    emitter.release_gpu()
    clock.advance(7000)  # uploading the weights
    emitter.close()
    assert [h.gpu_ms_total for h in publisher.heartbeats] == [0, 0, 3000]
    assert emitter.gpu_ms == 3000


def test_a_failed_publish_loses_nothing_the_next_heartbeat_carries_the_total() -> None:
    clock = FakeMonotonic()

    class Flaky(RecordingPublisher):
        calls = 0

        def publish(self, heartbeat: Heartbeat) -> None:
            self.calls += 1
            if self.calls == 2:  # the first beat after start()'s
                raise ConnectionError("down")
            super().publish(heartbeat)

    publisher = Flaky()
    emitter = make(publisher, clock)
    emitter.start(thread=False)
    emitter.hold_gpu()
    clock.advance(300)
    with pytest.raises(ConnectionError):
        emitter.beat()
    clock.advance(200)
    emitter.close()
    assert [(h.seq, h.gpu_ms_total) for h in publisher.heartbeats] == [(1, 0), (3, 500)]


def test_the_thread_beats_every_interval_and_runs_on_beat_after_each() -> None:
    publisher = RecordingPublisher()
    seen: list[int] = []
    emitter = HeartbeatEmitter(publisher, WHO, interval_s=0.02, on_beat=lambda h: seen.append(h.seq))
    emitter.start()
    wait_for(lambda: len(seen) >= 3, timeout=5)
    final = emitter.close()
    assert seen[:3] == [1, 2, 3]
    assert final.seq == len(publisher.heartbeats) and publisher.heartbeats[-1] is final
    assert emitter._thread is not None and not emitter._thread.is_alive()


def test_an_emitter_beats_only_between_start_and_its_final_heartbeat() -> None:
    emitter = make(RecordingPublisher(), FakeMonotonic())
    with pytest.raises(RuntimeError):
        emitter.beat()
    emitter.start(thread=False)
    emitter.close()
    with pytest.raises(RuntimeError):
        emitter.beat()


def test_heartbeats_written_to_a_stream_are_relayed_and_other_lines_skipped() -> None:
    stream = io.BytesIO()
    publisher = StreamPublisher(stream)
    clock = FakeMonotonic()
    emitter = make(publisher, clock, progress=lambda: Progress(3, None, 10))
    emitter.start(thread=False)
    emitter.hold_gpu()
    clock.advance(42)
    emitter.beat()
    emitter.close()
    lines = stream.getvalue().splitlines(keepends=True)
    lines.insert(1, b"some library printed this\n")

    relayed: list[Heartbeat] = []
    assert relay_heartbeats(lines, relayed.append) == 3
    assert [(h.seq, h.gpu_ms_total, h.step, h.loss, h.final) for h in relayed] == [
        (1, 0, 3, None, False),
        (2, 42, 3, None, False),
        (3, 42, 3, None, True),
    ]
    publisher.close()
    with pytest.raises(RuntimeError):
        publisher.publish(relayed[0])
