"""Bench: the ledger's ingest rate and its lag from a heartbeat to billing.json, direct and over Pub/Sub.

Everything real: a local-folder bucket (the embedded default), the event store on it,
``PlatformApp``/``UserApp`` (aggregate cache on, as ``python -m roles.ledger`` opens
them), a projector in the same process writing the views, the transport's own subscriber.

1. Ingest: N heartbeats of J jobs (U users) are published before the ledger starts; the
   time from its start until every one is metered gives heartbeats/s, with and without a
   projector in the same process. Measured in the same run: the same heartbeats through the
   same transport to a handler that only counts them (the transport's own ceiling), and the
   naive ledger (``UserApp.meter_usage`` per heartbeat, one commit each) on the same N
   heartbeats, each on a fresh world of the same size, the two interleaved over ``--rounds``
   (best of each); the ratio is ledger / naive. The scratch folder's file-creation cost is
   printed before and after: it swings 20x on these machines, and the figures on a folder
   bucket with it.
   In the ledger-alone rounds the same heartbeats also go to a ledger without signature checks
   and without the raw heartbeat archive (a third world each round): the difference is the cost
   of signing and archiving, printed as its own row.
2. Lag: J concurrent simulated runners each send a heartbeat every ``--interval`` seconds
   for ``--seconds``; each heartbeat's lag is from its ``at`` (when it was sent) until the
   projector has written the user's views (position.json, written after billing.json) at or
   past the ledger commit that metered it. p50/p99/max.

Both parts run on the direct transport, then on Google's Pub/Sub emulator (started
here, unless ``$PUBSUB_EMULATOR_HOST`` names a running one; ``--skip-pubsub``).

    .venv/bin/python bench/bench_ledger.py [--n 30000] [--jobs 200] [--users 20] [--rounds 2] [--seconds 30]
    .venv/bin/python bench/bench_ledger.py --smoke   # seconds (and the emulator's start)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch import file_create_us, scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402

from domain.metering import FixedUsage, UsageRun  # noqa: E402
from projections.projector import Projector  # noqa: E402
from projections.store import ViewStore  # noqa: E402
from roles.ledger import USER_APP_CACHE  # noqa: E402
from runners.ledger import LedgerWorker  # noqa: E402
from storage import LocalBucket, layout  # noqa: E402
from storage.eventstore import open_platform  # noqa: E402
from storage.eventstore.apps import PartitionApps  # noqa: E402
from storage.heartbeats import (  # noqa: E402
    DirectTransport,
    Heartbeat,
    HeartbeatTransport,
    attempt_secret,
    open_heartbeat_transport,
    sign_heartbeat,
    verify_heartbeat,
)
from tests import emulators  # noqa: E402

T0 = datetime(2026, 3, 10, tzinfo=UTC)
GPU = "h100-80gb"
SHA = "0" * 64

# the synthetic streams replay hours of heartbeats dated from T0 in seconds: the clock bounds (which
# still run on every heartbeat) are opened wide, as no honest runner's heartbeat is clamped
REPLAY_BOUNDS: dict[str, Any] = {"clock_bound": timedelta(days=3650), "gpu_tolerance": timedelta(days=1)}


class World:
    """A fresh bucket with prices and U users x (J/U) running jobs; a projector on a thread."""

    def __init__(self, root: Path, jobs: int, users: int, *, project: bool = True) -> None:
        # not durable (fsync=False): this bench measures the metering pipeline, not the disk
        self.bucket = LocalBucket(root / f"bucket-{uuid.uuid4().hex[:8]}", fsync=False)
        self.platform = open_platform(self.bucket)
        self.platform.set_price(GPU, 2_900_000, T0 - timedelta(days=30), T0 - timedelta(days=30))
        self.open_user = PartitionApps(self.bucket, AGGREGATE_CACHE_MAXSIZE=USER_APP_CACHE).user
        self.jobs = [(f"u{j % users}", f"j{j}") for j in range(jobs)]
        for user_id in {u for u, _ in self.jobs}:
            app = self.open_user(user_id)
            app.upload_dataset("ds1", "t.jsonl", 1, SHA, T0)
            app.validate_dataset("ds1", "chat", 1, {}, T0)
        for user_id, job_id in self.jobs:
            app = self.open_user(user_id)
            app.submit_job(job_id=job_id, base_model="tiny-llama", dataset_id="ds1", config={},
                           gpu_type=GPU, gpu_count=8, at=T0)  # fmt: skip
            app.queue_job(job_id, T0)
            app.start_job(job_id, 1, T0)
        self.written: dict[str, list[tuple[int, float]]] = {}
        self.views = _TimedViews(self.bucket, self.written)
        self.projector = Projector(self.bucket, self.open_partition, store=self.views) if project else None
        self.stop = threading.Event()
        if self.projector is not None:
            self.projector.start(self.stop)

    def open_partition(self, partition: str) -> Any:
        return self.platform if partition == "platform" else self.open_user(partition.split("/", 1)[1])

    def close(self) -> None:
        self.stop.set()


class _TimedViews(ViewStore):
    """Records when each position.json was written, and at which position."""

    def __init__(self, bucket: LocalBucket, written: dict[str, list[tuple[int, float]]]) -> None:
        super().__init__(bucket)
        self.written = written
        self.lock = threading.Lock()

    def put(self, name: str, data: bytes, generation: int, position: int) -> None:
        super().put(name, data, generation, position)
        if name.endswith("metadata/position.json"):
            with self.lock:
                self.written.setdefault(name, []).append((position, time.time()))


HEARTBEAT_KEY = b"bench-platform-heartbeat-key"


def signed(heartbeat: Heartbeat) -> Heartbeat:
    """``heartbeat`` signed as its runner signs it (the ledger drops unsigned ones)."""
    secret = attempt_secret(HEARTBEAT_KEY, heartbeat.user_id, heartbeat.job_id, heartbeat.attempt)
    return sign_heartbeat(heartbeat, secret)


def signing(n: int) -> None:
    """The cost of a signature, per heartbeat: sign (runner) and verify (ledger), a tight loop."""
    beat = beats_of([("u0", "j0")], 1)[0]
    secret = attempt_secret(HEARTBEAT_KEY, "u0", "j0", 1)
    began = time.perf_counter()
    for _ in range(n):
        sign_heartbeat(beat, secret)
    sign_us = (time.perf_counter() - began) / n * 1e6
    began = time.perf_counter()
    for _ in range(n):
        verify_heartbeat(beat, secret)
    verify_us = (time.perf_counter() - began) / n * 1e6
    print(f"  signing  HMAC-SHA256 per heartbeat, {n:,} in a loop: "
          f"sign {sign_us:.1f} us, verify {verify_us:.1f} us")


def beats_of(jobs: list[tuple[str, str]], rounds: int) -> list[Heartbeat]:
    return [
        signed(Heartbeat(user_id=u, job_id=j, attempt=1, seq=r + 1, gpu_type=GPU, gpu_count=8,
                         gpu_ms_total=10_000 * (r + 1), step=r, loss=1.0, tokens=65_536,
                         at=T0 + timedelta(seconds=10 * (r + 1))))
        for r in range(rounds) for u, j in jobs
    ]  # fmt: skip


def consume(transport: HeartbeatTransport, beats: list[Heartbeat], handler_of: Callable[[Any], Any]) -> float:
    """Publish ``beats``, then start a subscriber; seconds until the handler has taken all of them."""
    with transport.publisher() as pub:
        for h in beats:
            pub.publish(h)
        pub.flush()
    done = threading.Event()
    seen = [0]

    def count(batch: list[Heartbeat]) -> None:
        seen[0] += len(batch)
        if seen[0] >= len(beats):
            done.set()

    handler = handler_of(count)
    sub = transport.subscriber(max_batch=1000)
    start = time.perf_counter()
    handler(sub)
    if not done.wait(600):
        raise RuntimeError(f"only {seen[0]} of {len(beats)} heartbeats handled")
    elapsed = time.perf_counter() - start
    sub.close()
    return elapsed


def ingest(
    make_transport: Callable[[], HeartbeatTransport],
    root: Path,
    n: int,
    jobs: int,
    users: int,
    project: bool,
    rounds: int,
) -> None:
    """The ledger and the naive baseline on the same N heartbeats, each on a fresh world of the same
    size, interleaved round by round (ledger first in even rounds, baseline first in odd ones, so a
    busy stretch of the machine hits both alike); the best round of each counts."""
    beat_rounds = max(1, n // jobs)
    ledger_best: tuple[float, float, Any] | None = None
    bare_best: tuple[float, float, Any] | None = None
    naive_best: float | None = None
    for r in range(rounds):
        order = ("ledger", "bare", "naive") if r % 2 == 0 else ("naive", "bare", "ledger")
        for which in order:
            if which == "ledger":
                got = ledger_round(make_transport, root, jobs, users, project, beat_rounds)
                ledger_best = got if ledger_best is None or got[0] < ledger_best[0] else ledger_best
            elif which == "bare":
                if project:
                    continue  # measured once, on the ledger alone
                got = ledger_round(make_transport, root, jobs, users, project, beat_rounds, bare=True)
                bare_best = got if bare_best is None or got[0] < bare_best[0] else bare_best
            else:
                naive_s = naive_round(root, jobs, users, project, beat_rounds)
                naive_best = naive_s if naive_best is None or naive_s < naive_best else naive_best
    assert ledger_best is not None and naive_best is not None
    ledger_s, base_s, stats = ledger_best
    total = beat_rounds * jobs
    where = "with a projector in-process" if project else "ledger alone"
    print(f"  ingest   {where}: {total:,} heartbeats, {jobs} jobs, {users} users, best of {rounds}: "
          f"{total / ledger_s:,.0f}/s ({ledger_s:.2f} s; {stats.batches} batches, {stats.commits} commits, "
          f"{stats.events} events); transport alone {total / base_s:,.0f}/s")
    if bare_best is not None:
        bare_s = bare_best[0]
        per_us = (ledger_s - bare_s) / total * 1e6
        print(f"  cost     signatures + raw heartbeat archive, the same {total:,}: "
              f"with {total / ledger_s:,.0f}/s, without {total / bare_s:,.0f}/s: "
              f"{per_us:+.1f} us per heartbeat "
              f"({stats.archives} archive objects, {stats.archives / max(1, stats.batches):.1f} per batch)")
    interleaved = ", rounds interleaved" if rounds > 1 else ""
    print(f"           baseline, UserApp.meter_usage per heartbeat, the same {total:,} on a world "
          f"of the same size{interleaved}: {total / naive_best:,.0f}/s; "
          f"ratio ledger / baseline {naive_best / ledger_s:.1f}x")


def ledger_round(
    make_transport: Callable[[], HeartbeatTransport], root: Path, jobs: int, users: int, project: bool,
    beat_rounds: int, *, bare: bool = False,
) -> tuple[float, float, Any]:
    """One ledger run on a fresh world: (seconds, the transport alone's seconds, the worker's stats);
    ``bare``: without signature checks and without the archive (``_Bare``)."""
    world = World(root, jobs, users, project=project)
    beats = beats_of(world.jobs, beat_rounds)

    def baseline(count: Callable[[list[Heartbeat]], None]) -> Callable[[Any], None]:
        return lambda sub: sub.start(count)

    base_s = consume(make_transport(), beats, baseline)

    workers: list[LedgerWorker] = []

    def ledger(count: Callable[[list[Heartbeat]], None]) -> Callable[[Any], None]:
        def start(sub: Any) -> None:
            cls = _Bare if bare else LedgerWorker
            worker = cls(world.bucket, world.platform, world.open_user, sub, world.projector,
                         heartbeat_key=HEARTBEAT_KEY, archive_heartbeats=not bare, **REPLAY_BOUNDS)
            workers.append(worker)
            inner = worker.handle

            def handle(batch: list[Heartbeat]) -> None:
                inner(batch)
                count(batch)

            sub.start(handle)

        return start

    ledger_s = consume(make_transport(), beats, ledger)
    world.close()
    return ledger_s, base_s, workers[0].stats


class _Bare(LedgerWorker):
    """The ledger without signature checks (and, made with ``archive_heartbeats=False``, without the
    archive): a measure of what they cost, never a way to run it."""

    def _authentic(self, batch: list[Heartbeat]) -> list[Heartbeat]:
        return batch


def naive_round(root: Path, jobs: int, users: int, project: bool, beat_rounds: int) -> float:
    """The baseline on a fresh world of the same size: each heartbeat metered on its own with
    ``UserApp.meter_usage`` (one commit each), the projector told as the ledger tells it."""
    world = World(root, jobs, users, project=project)
    beats = beats_of(world.jobs, beat_rounds)
    start = time.perf_counter()
    for h in beats:
        run = UsageRun(job_id=h.job_id, attempt=h.attempt, first_seq=h.seq, last_seq=h.seq,
                       gpu_type=h.gpu_type, gpu_count=h.gpu_count, gpu_ms=10_000,
                       usd_micros_per_hour=2_900_000, period="2026-03", last_at=h.at,
                       heartbeats=1)  # fmt: skip
        world.open_user(h.user_id).meter_usage([h.job_id], FixedUsage([run]), h.at)
        if world.projector is not None:
            world.projector.notify(f"users/{h.user_id}")
    elapsed = time.perf_counter() - start
    world.close()
    return elapsed


def lag(
    transport: HeartbeatTransport, root: Path, jobs: int, users: int, seconds: float, interval: float,
    drain: float,
) -> None:
    world = World(root, jobs, users)
    sub = transport.subscriber(max_batch=1000)
    worker = LedgerWorker(world.bucket, world.platform, world.open_user, sub, world.projector,
                          heartbeat_key=HEARTBEAT_KEY, **REPLAY_BOUNDS)
    committed: list[tuple[str, int, datetime, float]] = []
    inner = worker.handle

    def handle(batch: list[Heartbeat]) -> None:
        inner(batch)
        now = time.time()
        for h in batch:
            partition = f"users/{h.user_id}"
            committed.append((partition, worker.stats.last_commit.get(partition, 0), h.at, now))

    sub.start(handle)
    stop = threading.Event()

    pub = transport.publisher()  # one client for every simulated runner (each would have its own machine)

    def runner(user_id: str, job_id: str, offset: float) -> None:
        seq = 0
        next_at = time.monotonic() + offset
        while not stop.is_set():
            stop.wait(max(0.0, next_at - time.monotonic()))
            seq += 1
            pub.publish(signed(Heartbeat(user_id=user_id, job_id=job_id, attempt=1, seq=seq, gpu_type=GPU,
                                         gpu_count=8, gpu_ms_total=int(interval * 1000) * seq, step=seq,
                                         loss=1.0, tokens=65_536, at=datetime.now(UTC))))  # fmt: skip
            next_at += interval

    threads = [threading.Thread(target=runner, args=(u, j, interval * i / jobs), daemon=True)
               for i, (u, j) in enumerate(world.jobs)]  # fmt: skip
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    pub.close()
    time.sleep(drain)
    sub.close()
    world.close()
    lags, to_commit = [], []
    for partition, position, at, done in committed:
        writes = world.written.get(layout.position(partition), [])
        when = next((t for p, t in writes if p >= position), None)
        to_commit.append(done - at.timestamp())
        if when is not None:
            lags.append(when - at.timestamp())
    lags.sort()
    to_commit.sort()
    missing = len(committed) - len(lags)
    if not lags:
        print("  lag      no heartbeat reached billing.json")
        return
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(f"  lag      {len(committed):,} heartbeats, {jobs} jobs every {interval:g} s for {seconds:g} s: "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
          f"{f' ({missing} not projected)' if missing else ''}; {worker.stats.commits} commits")
    c50, c99 = to_commit[len(to_commit) // 2], to_commit[int(len(to_commit) * 0.99)]
    print(f"           of which heartbeat -> ledger commit: p50 {c50 * 1000:.0f} ms, p99 {c99 * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="ingest rounds (ledger, baseline interleaved)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between one job's heartbeats")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds for the last heartbeats to land")
    parser.add_argument("--skip-pubsub", action="store_true")
    args = parse_args(parser, n=100, jobs=4, users=2, rounds=1, seconds=1.0, interval=0.25, drain=0.5)
    with scratch_dir() as tmp:
        root = Path(tmp)
        print(f"buckets in {root}: file create+link+unlink {file_create_us(root):.0f} us")
        signing(max(args.n, 20_000))
        print("direct transport")
        for project in (False, True):
            direct = lambda: DirectTransport(f"bench-{uuid.uuid4().hex[:8]}")  # noqa: E731
            ingest(direct, root, args.n, args.jobs, args.users, project, args.rounds)
        sizes = (args.jobs, args.users, args.seconds, args.interval, args.drain)
        lag(DirectTransport("bench-lag"), root, *sizes)
        if args.skip_pubsub:
            return 0
        with emulators.running_or_started("PUBSUB_EMULATOR_HOST", emulators.pubsub_emulator) as host:
            os.environ["PUBSUB_EMULATOR_HOST"] = host

            def fresh() -> HeartbeatTransport:
                name = f"bench-{uuid.uuid4().hex[:12]}"
                return open_heartbeat_transport(f"pubsub://bench/{name}/{name}-sub", create=True)

            print("Pub/Sub (Google's emulator on this machine)")
            for project in (False, True):
                ingest(fresh, root, args.n, args.jobs, args.users, project, args.rounds)
            lag(fresh(), root, *sizes)
        print(f"file create+link+unlink in {root}: {file_create_us(root):.0f} us now "
              "(a commit's file work; it swings 20-1000 us on these machines, and the figures with it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
