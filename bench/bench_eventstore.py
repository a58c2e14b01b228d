"""Bench: the event store on a Bucket, as a ratio to the library's SQLite recorder in the same run.

Appends: an Application saving one aggregate per save, with 1 event each
("1-event saves") or 100 events each ("100-event saves"), on a fresh
partition (or database) per round. Replay: a cold reader (a new bucket
object or a new SQLite connection, nothing cached) pages through every
notification, 1000 at a time, as a projection rebuilding from 0 does. The
replayed log holds ``--replay`` events written one commit per event (the
worst case for commit objects); SQLite holds the same rows. Each figure is
the median of ``--rounds``, and each ratio the median of per-round ratios,
every round running all backends back to back (the machine may be shared,
so a round's load hits them alike).

Durability leads: the baseline is SQLite with ``synchronous=FULL`` (set on every
connection: each commit is on disk before it returns), and the first bucket row of
each append table is the like-for-like one, ``LocalBucket fsync=1``. The LocalBucket
without fsync (the page cache holds a commit until the kernel writes it) comes after,
marked not durable. The fake-gcs-server that ``$STORAGE_EMULATOR_HOST`` names is used
if set, else one is started; every measurement on it gets a bucket of its own. fake-gcs-server's
create and read slow down with the number of objects in their bucket (200 creates of 600 bytes: 1.4 ms
each in an empty bucket, 9.5 ms with 8,000 objects there; in a second, empty bucket still 1.4 ms), so
rows sharing one bucket were timed against what the rows before them had left there.

    .venv/bin/python bench/bench_eventstore.py [--saves 1000] [--replay 20000] [--rounds 5] [--no-gcs]
    .venv/bin/python bench/bench_eventstore.py --smoke   # seconds: only checks that it runs

A third table saves from ``--threads`` threads of one process at once: the event store writes
the batches queued meanwhile as one commit (group commit), SQLite commits each in turn.

A fourth saves from ``--processes`` OS processes at once, all on one partition, against one
process saving alone on the same bucket; its ratio is to that one process (goal >= 1.0x). Each
process is warmed first, as a server's writer is: all of them save ``WARM_SAVES`` times together
(they meet, elect a leader and the others relay to it), then start the timed part together:
``--process-saves`` 1-event saves (1000; a fifth of them on fake-gcs-server), each acknowledged before
the next. Shorter windows mostly time the writers settling: with 250 (50 a process on fake-gcs-server)
the fake-gcs row gave 0.65-1.68x where 1000 gave 1.37-2.32x. The writers relay their batches to the
partition's leader (``storage.eventstore.relay``, the production default); ``--no-relay`` races
them instead (each must read the others' commits before it appends), as before the relay.

Commits are signed (the default; keys under ``$TUNE_HOME/keys``) in every bucket row; the cost of
signing and verifying is printed as its own row (``signatures``).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from eventsourcing.application import Application  # noqa: E402
from eventsourcing.domain import Aggregate, event  # noqa: E402
from eventsourcing.persistence import ApplicationRecorder, StoredEvent  # noqa: E402
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402

from storage import Bucket, LocalBucket, open_bucket  # noqa: E402
from storage.eventstore import BucketApplicationRecorder, open_application  # noqa: E402
from storage.eventstore.signing import Keyring  # noqa: E402
from tests import emulators  # noqa: E402

STATE = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-29T10:00:00+00:00"},"step":17,"loss":0.25}'


class Job(Aggregate):
    @event("Submitted")
    def __init__(self, name: str) -> None:
        self.name = name
        self.step = 0

    @event("ProgressReported")
    def report(self, step: int, loss: float) -> None:
        self.step = step


class Jobs(Application):
    pass


class Row(NamedTuple):
    label: str
    rate: float
    unit: str
    ratio: float


# -- what is measured ----------------------------------------------------------------


def saves_per_second(app: Application, saves: int, events_per_save: int) -> float:
    start = time.perf_counter()
    for i in range(saves):
        job = Job(f"job-{i}")
        for step in range(1, events_per_save):
            job.report(step, 0.5)
        app.save(job)
    return saves / (time.perf_counter() - start)


def concurrent_saves_per_second(app: Application, saves: int, threads: int) -> float:
    """1-event saves from ``threads`` threads of one process at once (a server's request handlers)."""
    from concurrent.futures import ThreadPoolExecutor

    def save(i: int) -> None:
        app.save(Job(f"job-{i}"))

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(save, range(saves)))
    return saves / (time.perf_counter() - start)


_FORK = multiprocessing.get_context("fork")


WARM_SAVES = 5
"""Saves each writer process makes, all of them at once, before the timed ones (the relay settles)."""


def _process_saver(url: str, prefix: str, saves: int, warm: object, barrier: object, out: object,
                   done: object) -> None:
    """One writer process: open the partition, save ``WARM_SAVES`` times with the others (warm), wait for
    them, save ``saves``, then stay up until every process is done (a server does not exit when its
    own saves are: one that leads the partition's writers keeps committing theirs)."""
    try:
        app = open_application(Jobs, open_bucket(url), prefix)
        warm.wait()  # type: ignore[attr-defined]
        for i in range(WARM_SAVES):
            app.save(Job(f"warm-{i}"))
        barrier.wait()  # type: ignore[attr-defined]
        for i in range(saves):
            app.save(Job(f"job-{i}"))
        out.put(None)  # type: ignore[attr-defined]
    except BaseException as exc:
        out.put(repr(exc))  # type: ignore[attr-defined]
        raise
    finally:
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait(timeout=600)  # type: ignore[attr-defined]


def processes_saves_per_second(bucket: Bucket, saves_each: int, processes: int) -> float:
    """1-event saves from ``processes`` OS processes on one partition of ``bucket`` (timed from the moment
    they are all warm)."""
    prefix = f"bench/p{processes}-{uuid.uuid4().hex[:8]}/events/"
    warm, barrier, done = _FORK.Barrier(processes), _FORK.Barrier(processes + 1), _FORK.Barrier(processes + 1)
    out = _FORK.Queue()
    workers = [_FORK.Process(target=_process_saver,
                             args=(bucket.url, prefix, saves_each, warm, barrier, out, done))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
        start = time.perf_counter()
        errors = [out.get(timeout=600) for _ in workers]  # every save acknowledged
        elapsed = time.perf_counter() - start
        done.wait(timeout=60)
    finally:
        for worker in workers:
            worker.join(timeout=30)
    failed = [error for error in errors if error is not None]
    if failed:
        raise RuntimeError(f"a writer process failed: {failed[0]}")
    return processes * saves_each / elapsed


def replay_per_second(recorder: ApplicationRecorder) -> float:
    start, seen, position = time.perf_counter(), 0, 0
    while True:
        page = recorder.select_notifications(position, 1000, inclusive_of_start=False)
        if not page:
            break
        seen += len(page)
        position = page[-1].id
    return seen / (time.perf_counter() - start)


def fill(recorder: ApplicationRecorder, events: int, per_insert: int) -> None:
    """``events`` one-event aggregates, inserted ``per_insert`` to a call."""
    for first in range(0, events, per_insert):
        recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "bench:Job.ProgressReported", STATE)
                                for _ in range(min(per_insert, events - first))])


# -- the backends -----------------------------------------------------------------


_connect = SQLiteConnectionPool._create_connection


def _connect_synchronous_full(pool: SQLiteConnectionPool) -> SQLiteConnection:
    """The library's connection, with ``PRAGMA synchronous=FULL``: every commit durable, whatever
    this build of SQLite defaults to in WAL mode."""
    conn = _connect(pool)
    conn.cursor().execute("PRAGMA synchronous=FULL")
    return conn


SQLiteConnectionPool._create_connection = _connect_synchronous_full  # type: ignore[method-assign]
BASELINE = "SQLite synchronous=FULL (baseline)"
NOT_DURABLE = {"LocalBucket": "LocalBucket, no fsync (not durable)"}


def sqlite_app(folder: Path) -> Jobs:
    """An app on the library's SQLite recorder; keep the app while using its recorder (it owns the pool)."""
    return Jobs(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{folder}/db.sqlite"})


def bucket_app(bucket: Bucket, tag: str) -> Jobs:
    return open_application(Jobs, bucket, f"bench/{tag}-{uuid.uuid4().hex[:8]}/events/")


def paired(rounds: int, measures: dict[str, Callable[[int], float]]) -> dict[str, tuple[float, float]]:
    """Run every measure once per round, back to back; per name: (median rate, median ratio to the first)."""
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(rounds):
        for name, measure in measures.items():
            rates[name].append(measure(r))
    baseline = rates[next(iter(measures))]
    return {name: (statistics.median(values),
                   statistics.median(v / b for v, b in zip(values, baseline, strict=True)))
            for name, values in rates.items()}


def append_rows(tmp: Path, args: argparse.Namespace, buckets: dict[str, Callable[[], Bucket]]) -> list[Row]:
    rows = []
    for events, saves in ((1, args.saves), (100, max(args.saves // 10, 10))):
        measures: dict[str, Callable[[int], float]] = {
            BASELINE: lambda r, e=events, s=saves: saves_per_second(
                sqlite_app(_fresh(tmp / f"sq{e}-{r}")), s, e)}
        for name, make in buckets.items():
            n = saves if name.startswith("Local") else max(saves // 5, 10)
            measures[NOT_DURABLE.get(name, name)] = lambda r, e=events, n=n, make=make: saves_per_second(
                bucket_app(make(), f"a{e}-{r}"), n, e)
        for name, (rate, ratio) in paired(args.rounds, measures).items():
            rows.append(Row(f"{events}-event saves: {name}", rate, "saves/s", ratio))
    threads = args.threads
    measures = {BASELINE: lambda r: concurrent_saves_per_second(
        sqlite_app(_fresh(tmp / f"sqt-{r}")), args.saves, threads)}
    for name, make in buckets.items():
        n = args.saves if name.startswith("Local") else max(args.saves // 5, 10)
        measures[NOT_DURABLE.get(name, name)] = lambda r, n=n, make=make: concurrent_saves_per_second(
            bucket_app(make(), f"t-{r}"), n, threads)
    for name, (rate, ratio) in paired(args.rounds, measures).items():
        rows.append(Row(f"1-event saves, {threads} threads: {name}", rate, "saves/s", ratio))
    return rows


def process_rows(args: argparse.Namespace, buckets: dict[str, Callable[[], Bucket]]) -> list[Row]:
    """Per bucket: one process saving alone, then ``--processes`` processes on one partition; the ratio is
    to the one process."""
    rows, p = [], args.processes
    for name, make in buckets.items():
        n = args.process_saves if name.startswith("Local") else max(args.process_saves // 5, 5)
        measures: dict[str, Callable[[int], float]] = {
            "1 process": lambda _, make=make, n=n: processes_saves_per_second(make(), n * p, 1),
            f"{p} processes": lambda _, make=make, n=n: processes_saves_per_second(make(), n, p)}
        how = "racing" if args.no_relay else "relay"
        for label, (rate, ratio) in paired(args.rounds, measures).items():
            rows.append(Row(f"1-event saves, {label} ({how}): {NOT_DURABLE.get(name, name)}",
                            rate, "saves/s", ratio))
    return rows


def replay_rows(tmp: Path, args: argparse.Namespace, buckets: dict[str, Callable[[], Bucket]]) -> list[Row]:
    db = _fresh(tmp / "replay-sqlite")
    writer = sqlite_app(db)
    fill(writer.recorder, args.replay, 500)
    measures: dict[str, Callable[[int], float]] = {BASELINE: lambda _: _sqlite_replay(db)}
    counts = {BASELINE: args.replay}
    for name, make in buckets.items():
        if "fsync" in name:
            continue
        events = args.replay if name.startswith("Local") else max(args.replay // 10, 100)
        bucket, partition = make(), f"bench/replay-{uuid.uuid4().hex[:8]}/events/"
        fill(BucketApplicationRecorder(bucket, partition), events, 1)
        warm = BucketApplicationRecorder(bucket, partition)
        measures[f"{name}, cold"] = lambda _, url=bucket.url, p=partition: replay_per_second(
            BucketApplicationRecorder(open_bucket(url), p))
        measures[f"{name}, warm"] = lambda _, w=warm: replay_per_second(w)
        counts[f"{name}, cold"] = counts[f"{name}, warm"] = events
    return [Row(f"replay {counts[name]} events: {name}", rate, "events/s", ratio)
            for name, (rate, ratio) in paired(args.rounds, measures).items()]


def signature_row(count: int) -> str:
    """What signed commits cost: Ed25519 sign (each append) and verify (each commit a process first reads;
    a sealed segment's verdict is then kept by its hash, so a re-read pays none), per commit."""
    from storage.eventstore.commits import Commit, check_signature, event_record, sign_commit
    from storage.eventstore.signing import SigningKey, make_entry

    root, key = SigningKey.generate("root"), SigningKey.generate("bench")
    from storage.memory import MemoryBucket

    bucket = MemoryBucket()
    bucket.create(f"platform/keyring/{key.key_id}.json", msgspec.json.encode(make_entry(root, key)))
    keyring = Keyring(bucket, root.public)
    commit = Commit(7, 7, "0" * 64, [event_record(uuid.uuid4(), 1, "bench:Job.Submitted", STATE)])
    start = time.perf_counter()
    signed = [sign_commit("bench/events/", commit, key) for _ in range(count)]
    sign_us = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    assert all(check_signature("bench/events/", c, keyring) == "ok" for c in signed)
    verify_us = (time.perf_counter() - start) / count * 1e6
    return (f"signatures (Ed25519, per commit): sign {sign_us:.1f} us, verify {verify_us:.1f} us "
            "(verify: once per commit per process; a verified segment is not checked again)")


def _sqlite_replay(db: Path) -> float:
    app = sqlite_app(db)  # a new connection pool: nothing cached in Python
    return replay_per_second(app.recorder)


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


@contextlib.contextmanager
def gcs_bucket(enabled: bool) -> Iterator[Callable[[], Bucket] | None]:
    if not enabled:
        yield None
        return
    with emulators.running_or_started("STORAGE_EMULATOR_HOST", emulators.fake_gcs_server) as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url

        def fresh_bucket() -> Bucket:
            name = f"bench-{uuid.uuid4().hex[:12]}"
            emulators.create_gcs_bucket(url, name)
            return open_bucket(f"gs://{name}")

        yield fresh_bucket


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--saves", type=int, default=1000, help="1-event saves per round (a tenth for 100)")
    parser.add_argument("--replay", type=int, default=20000, help="events in the replayed log")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-gcs", dest="gcs", action="store_false", help="skip fake-gcs-server")
    parser.add_argument("--signatures", type=int, default=2000, help="commits signed and verified")
    parser.add_argument("--threads", type=int, default=8, help="threads saving at once (group commit)")
    parser.add_argument("--processes", type=int, default=8, help="processes saving to one partition at once")
    parser.add_argument("--process-saves", type=int, default=1000,
                        help="1-event saves per process (a fifth on fake-gcs-server)")
    parser.add_argument("--only-processes", action="store_true", help="only the multi-process table")
    parser.add_argument("--no-relay", action="store_true",
                        help="writer processes race for each commit instead of relaying to a leader")
    args = parse_args(parser, saves=20, replay=200, rounds=1, signatures=20, processes=2, process_saves=5)
    os.environ["TUNE_RELAY"] = "off" if args.no_relay else "on"  # the forked writers inherit it
    with scratch_dir() as name, gcs_bucket(args.gcs) as gcs:
        tmp = Path(name)
        synced = LocalBucket(tmp / "synced")  # the default: durable
        local = LocalBucket(tmp / "local", fsync=False)
        buckets: dict[str, Callable[[], Bucket]] = {"LocalBucket fsync=1": lambda: synced,  # durable first
                                                    "LocalBucket": lambda: local}
        if gcs is not None:
            buckets["GcsBucket (fake-gcs-server)"] = gcs
        rows = [] if args.only_processes else (append_rows(tmp, args, buckets)
                                               + replay_rows(tmp, args, buckets))
        writers = process_rows(args, buckets)
    print("durable first: LocalBucket fsync=1 against SQLite synchronous=FULL; then LocalBucket without "
          "fsync, which is not durable")
    for row in rows:
        print(f"{row.label:72s} {row.rate:11,.0f} {row.unit:9s} {row.ratio:7.2f} x SQLite")
    print(f"several writer processes on one partition, against one (goal: {args.processes} processes at "
          "least as fast as one)")
    for row in writers:
        print(f"{row.label:72s} {row.rate:11,.0f} {row.unit:9s} {row.ratio:7.2f} x 1 process")
    if args.only_processes:
        return 0
    print(signature_row(args.signatures))
    durable = {row.label.split(":")[0]: row.ratio for row in rows
               if row.label.endswith(": LocalBucket fsync=1")}
    print("durable vs durable (goal >= 1.0x): "
          + ", ".join(f"{label} {ratio:.2f}x SQLite" for label, ratio in durable.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
