"""The ledger over each heartbeat transport: DirectTransport and Pub/Sub on Google's emulator.

The same tests run on both (a fresh topic and ordered subscription per test on the
emulator; no emulator is a failure, not a skip): exact billing of a stream with repeats,
dedupe across a ledger restart, a stop before a job's max cost is passed, and a runner
killed with SIGKILL billed to its last heartbeat and no further, then found lost.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1

from domain.job import Job, JobState
from domain.money import cost_usd_micros
from projections.render import decode
from runners.ledger import LedgerWorker
from storage import LocalBucket, ObjectNotFound
from storage.heartbeats import (
    DirectTransport,
    Heartbeat,
    HeartbeatTransport,
    decode_heartbeat,
    open_heartbeat_transport,
)
from storage.layout import billing, user_partition
from tests.unit.ledger.builders import A100, A100_PRICE, HEARTBEAT_KEY, INTERVAL_S, Platform, beat, stream

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


@pytest.fixture
def platform() -> Iterator[Platform]:
    platform = Platform()
    stop = threading.Event()
    platform.projector.start(stop)
    yield platform
    stop.set()


def utc_now() -> datetime:
    return datetime.now(UTC)


def start_worker(platform: Platform, transport: HeartbeatTransport, **options: object) -> LedgerWorker:
    # the synthetic streams publish minutes of heartbeats (dated from T0) in a moment: the clock bounds
    # (tests/unit/ledger/test_clocks.py, the property tests) are opened wide for these transport tests
    unbounded = {"clock_bound": timedelta(days=3650), "gpu_tolerance": timedelta(days=1)}
    options = {"clock": utc_now, "flush_interval_s": 0.05, "sweep_interval_s": 3600.0, **unbounded, **options}
    worker = platform.worker(transport.subscriber(max_batch=100, retry_delay_s=0.01), **options)
    worker.start()
    return worker


def publish(transport: HeartbeatTransport, heartbeats: list[Heartbeat]) -> None:
    with transport.publisher() as publisher:
        for heartbeat in heartbeats:
            publisher.publish(heartbeat)
        publisher.flush(timeout=WAIT_S)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gpu_ms(platform: Platform, user_id: str, job_id: str) -> int:
    return int(platform.job(user_id, job_id).gpu_ms)


def test_a_stream_with_repeats_is_billed_exactly_and_billing_json_follows(
    platform: Platform, transport: HeartbeatTransport
) -> None:
    platform.running_job("u1", "j1", gpu_count=2)
    platform.running_job("u1", "j2")
    platform.running_job("u2", "j3")
    j1, j2, j3 = stream("j1", 40, gpu_count=2), stream("j2", 30), stream("j3", 20, user_id="u2")
    worker = start_worker(platform, transport)
    try:
        publish(transport, j1[:25] + j2 + j1[10:] + j3 + j3[:5])  # a runner republished, a relay repeated
        metered = [("u1", "j1", 400_000), ("u1", "j2", 300_000), ("u2", "j3", 200_000)]
        wait_until(  # jobs arrive in any order relative to each other
            lambda: all(gpu_ms(platform, user, job) == ms for user, job, ms in metered),
            "every heartbeat metered",
        )
    finally:
        worker.close()
    expected_u1 = cost_usd_micros(400_000, 2, A100_PRICE) + cost_usd_micros(300_000, 1, A100_PRICE)
    assert platform.projector.wait_for(user_partition("u1"))
    billing = platform.billing_json("u1")["current_period"]
    assert billing["total_cost_usd_micros"] == expected_u1
    assert billing["usage_breakdown"][A100]["seconds"] == 40 * 10 * 2 + 30 * 10
    assert platform.stored_billing("u1") == platform.replayed_billing("u1")
    assert worker.stats.metered == 90 and worker.stats.duplicates >= 20  # Pub/Sub may redeliver more


def test_a_restarted_ledger_bills_redelivered_heartbeats_once(
    platform: Platform, transport: HeartbeatTransport
) -> None:
    platform.running_job("u1", "j1")
    beats = stream("j1", 30)
    first = start_worker(platform, transport)
    try:
        publish(transport, beats[:15])
        wait_until(lambda: gpu_ms(platform, "u1", "j1") == 150_000, "the first half metered")
    finally:
        first.close()
    restarted = Platform(platform.bucket, clock=platform.clock)  # new applications: nothing in memory
    second = start_worker(restarted, transport)
    try:
        publish(transport, beats)  # everything again: the first half is redelivered
        wait_until(lambda: gpu_ms(restarted, "u1", "j1") == 300_000, "the second half metered")
        wait_until(lambda: second.stats.duplicates >= 15, "the repeats dropped")
    finally:
        second.close()
    assert restarted.job("u1", "j1").cost_usd_micros == cost_usd_micros(300_000, 1, A100_PRICE)


def test_a_runner_asked_to_stop_at_its_limit_is_charged_no_more_than_it(
    platform: Platform, transport: HeartbeatTransport
) -> None:
    per_interval = cost_usd_micros(10_000, 1, A100_PRICE)
    limit = 7 * per_interval + per_interval // 3
    platform.running_job("u1", "j1", max_cost_usd_micros=limit)
    worker = start_worker(platform, transport)
    try:
        with transport.publisher() as runner:
            for seq in range(1, 100):  # a runner that reads its job after each heartbeat
                stopping = platform.job("u1", "j1").state == JobState.STOPPING
                total = 10_000 * (seq - 1) + (10_000 if not stopping else 4_000)  # cumulative
                runner.publish(beat("j1", seq, gpu_ms_total=total, final=stopping))
                runner.flush(timeout=WAIT_S)
                wait_until(lambda s=seq: _metered_seq(platform) == s, f"heartbeat {seq} metered")
                if stopping:
                    break
    finally:
        worker.close()
    job = platform.job("u1", "j1")
    assert job.stop_reason == "budget_exceeded" and job.state == JobState.STOPPING
    charged = job.cost_usd_micros + job.credited_usd_micros
    assert limit < charged <= limit + per_interval  # the runner went on for at most one interval
    assert limit - cost_usd_micros(1, 1, A100_PRICE) <= job.cost_usd_micros <= limit  # the cap: net <= limit


def _metered_seq(platform: Platform) -> int:
    job = platform.user_app("u1").repository.get(Job.create_id("j1"))
    return job.metered_seq.get("1", 0)  # type: ignore[no-any-return]


RUNNER = """
import sys, time
from datetime import UTC, datetime
from storage.heartbeats import Heartbeat, attempt_secret, encode_heartbeat, sign_heartbeat
from storage.heartbeats import open_heartbeat_transport
url, interval = sys.argv[1], float(sys.argv[2])
secret = attempt_secret(bytes.fromhex(sys.argv[3]), "u1", "j1", 1)
publisher = None if url == "stdout:" else open_heartbeat_transport(url).publisher()
seq = 0
while True:
    time.sleep(interval)
    seq += 1
    hb = Heartbeat(user_id="u1", job_id="j1", attempt=1, seq=seq, gpu_type="a100-80gb", gpu_count=1,
                   gpu_ms_total=int(interval * 1000) * seq, step=seq, loss=None, tokens=0,
                   at=datetime.now(UTC))
    hb = sign_heartbeat(hb, secret)
    if publisher is None:
        sys.stdout.buffer.write(encode_heartbeat(hb) + b"\\n")
    else:
        publisher.publish(hb)
        publisher.flush()
        sys.stdout.buffer.write(b"sent %d\\n" % seq)
    sys.stdout.flush()
"""


def test_a_killed_runner_is_metered_to_its_last_heartbeat_then_lost_and_credited(
    platform: Platform, transport: HeartbeatTransport
) -> None:
    interval = 0.2
    platform.running_job("u1", "j1", interval_s=interval, at=utc_now())
    worker = start_worker(platform, transport)
    direct = isinstance(transport, DirectTransport)
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "stdout:" if direct else transport.url, str(interval),
         HEARTBEAT_KEY.hex()],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    sent: list[int] = []
    relay = transport.publisher() if direct else None

    def read() -> None:  # the dispatcher's relay for a local runner; a log of what was sent otherwise
        assert runner.stdout is not None
        for line in runner.stdout:
            if relay is not None:
                heartbeat = decode_heartbeat(line.strip())
                relay.publish(heartbeat)
                sent.append(heartbeat.seq)
            else:
                sent.append(int(line.split()[1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(sent) >= 8, "8 heartbeats sent")
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=WAIT_S)
        reader.join(timeout=WAIT_S)
        last = max(sent)
        wait_until(lambda: gpu_ms(platform, "u1", "j1") >= last * 200, "every sent heartbeat metered")
        time.sleep(8 * interval)  # silence: nothing more may be billed
        metered = gpu_ms(platform, "u1", "j1")
        assert metered in (last * 200, (last + 1) * 200)  # Pub/Sub may have taken one more before the kill
        lost = worker.sweep()
    finally:
        worker.close()
        if relay is not None:
            relay.close()
    assert [(j.job_id, j.outcome) for j in lost] == [("j1", "retrying")]
    job = platform.job("u1", "j1")
    assert job.gpu_ms == metered  # metered to its last heartbeat ...
    # ... and, lost with no checkpoint of its own, all of it credited: the platform's fault
    assert job.credited_gpu_ms == metered and job.cost_usd_micros == 0
    assert job.credited_usd_micros == cost_usd_micros(metered, 1, A100_PRICE)
    assert job.last_heartbeat_at is not None
    assert utc_now() - job.last_heartbeat_at > timedelta(seconds=6 * interval)


@pytest.mark.pubsub
def test_the_standalone_ledger_process_meters_from_pubsub_and_exits_cleanly(
    pubsub_emulator: str, tmp_path: Path
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    platform = Platform(bucket)
    platform.running_job("u1", "j1", gpu_count=4)
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    url = f"pubsub://test-project/{name}/{name}-sub"
    ledger = subprocess.Popen(
        [sys.executable, "-m", "roles.ledger", "--bucket", f"file://{bucket.root}", "--heartbeats", url,
         "--create", "--project", "--flush-interval", "0.05", "--clock-bound", str(3650 * 86400)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "TUNE_HEARTBEAT_KEY": HEARTBEAT_KEY.decode()},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _subscription_exists(url) or ledger.poll() is not None, "the subscription")
        publish(open_heartbeat_transport(url), stream("j1", 30, gpu_count=4) + stream("j1", 5, gpu_count=4))
        expected = cost_usd_micros(30 * INTERVAL_S * 1000, 4, A100_PRICE)
        wait_until(lambda: _billed(bucket) == expected, "billing.json written by the ledger process")
    finally:
        ledger.send_signal(signal.SIGTERM)
        _, log = ledger.communicate(timeout=WAIT_S)
    assert ledger.returncode == 0, log
    assert platform.job("u1", "j1").cost_usd_micros == expected
    dropped = re.search(r"ledger stopped: .*duplicates=(\d+)", log)
    assert dropped is not None and int(dropped[1]) >= 5, log


def _subscription_exists(url: str) -> bool:
    project, _, subscription = url.removeprefix("pubsub://").split("/")
    client = pubsub_v1.SubscriberClient()
    try:
        client.get_subscription(request={"subscription": client.subscription_path(project, subscription)})
    except exceptions.NotFound:
        return False
    finally:
        client.close()
    return True


def _billed(bucket: LocalBucket) -> int | None:
    try:
        view = decode(bucket.read(billing("u1")))
    except ObjectNotFound:
        return None
    current = view.get("current_period") or {}
    return current.get("total_cost_usd_micros")  # type: ignore[no-any-return]
