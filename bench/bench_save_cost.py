"""Bench: where the time of one durable 1-event save goes, in the event store and in SQLite.

``bench_eventstore.py`` compares durable 1-event saves as a whole (LocalBucket ``fsync=1`` against
SQLite ``synchronous=FULL``). This splits each into three parts, by saving the same aggregate
(``bench_eventstore.Job``) on

* eventsourcing's in-memory recorder: the library's own work, which both stores pay alike;
* the store on a tmpfs folder (``/dev/shm``), where a flush costs nothing: the store's CPU;
* the store on the disk (``$BENCH_DIR``): the rest is what durability costs there (the flush, and
  on a filesystem with a journal what creating files adds to it);

plus the event store on a ``MemoryBucket`` (the log's own work, signing included, without files) and
on one that also appends each commit to a journal on the disk and flushes it (what a pack layout, one
preallocated file per partition and no file per commit, would cost at least: not built), the
store on the disk with its journal flushed by ``fdatasync`` instead of through the anchor (as before
``storage.local_flush``; the two rows are the same where the disk is not ext4), and one Ed25519
signature timed alone. Each figure is the median of ``--rounds``; every round runs every
row back to back, and the headline ratio is the median of the per-round ratios.

    .venv/bin/python bench/bench_save_cost.py [--saves 1000] [--rounds 5]
    .venv/bin/python bench/bench_save_cost.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_eventstore import Jobs, bucket_app, saves_per_second, sqlite_app  # noqa: E402
from scratch import file_create_us, scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402

from storage import LocalBucket, ObjectStat, local_flush, local_journal  # noqa: E402
from storage.eventstore.signing import SigningKey  # noqa: E402
from storage.local import FILE_MODE, make_private_dirs  # noqa: E402
from storage.memory import MemoryBucket  # noqa: E402

TMPFS = Path("/dev/shm")
LIBRARY = "eventsourcing alone (in-memory recorder)"
SQLITE_FAST, SQLITE_DISK = "SQLite synchronous=FULL, tmpfs", "SQLite synchronous=FULL, disk (baseline)"
LOG = "event store, MemoryBucket (signed)"
STORE_FAST, STORE_DISK = "event store, LocalBucket fsync=1, tmpfs", "event store, LocalBucket fsync=1, disk"
STORE_DATASYNC = "  the same, journal flushed by fdatasync"
PACK_FLOOR = "event store, MemoryBucket + journal flush, disk"


def sign_us(count: int) -> float:
    """The median time of one Ed25519 signature over a commit-sized message, in microseconds."""
    key = SigningKey.generate("bench")
    message = os.urandom(600)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        key.sign(message)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def journal_fdatasynced(root: Path) -> LocalBucket:
    """A durable bucket whose journal is flushed by ``fdatasync`` (as before ``storage.local_flush``, and as
    off ext4), not through the anchor: its journal is acquired at once, with no anchor to be had."""
    bucket = LocalBucket(root)
    with mock.patch.object(local_flush, "open_anchor", return_value=None):
        bucket._journal()  # this process's journal for the folder, kept for every later write
    return bucket


class PackFloor(MemoryBucket):
    """What a pack layout would cost at least (each commit appended to one preallocated file, no file per
    commit; not built): the store on a ``MemoryBucket`` that also appends each write to a journal on the
    disk and flushes it, as the local bucket does (through the anchor on ext4)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        make_private_dirs(folder / "tmp")
        self.journal = local_journal.acquire(str(folder / "journal"), f"{folder}/tmp/", make_private_dirs,
                                             FILE_MODE)

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        with self.journal.put(name, 0, data):
            return super().write(name, data, if_generation_match=if_generation_match)


def save_us(make: Callable[[], Jobs], saves: int) -> float:
    """Microseconds per 1-event save on a fresh app (a few saves first, so its writer is warm)."""
    app = make()
    saves_per_second(app, 5, 1)
    return 1e6 / saves_per_second(app, saves, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--saves", type=int, default=1000, help="1-event saves per row and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_args(parser, saves=20, rounds=1)
    fast_base = TMPFS if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) else None
    with scratch_dir() as disk_name, tempfile.TemporaryDirectory(dir=fast_base) as fast_name:
        disk, fast = Path(disk_name), Path(fast_name)
        os.environ["TUNE_HOME"] = str(disk / "home")  # this run's signing keys
        made = iter(range(10**9))

        def folder(base: Path) -> Path:
            path = base / f"f{next(made)}"
            path.mkdir()
            return path

        rows: dict[str, Callable[[], Jobs]] = {
            LIBRARY: Jobs,
            SQLITE_FAST: lambda: sqlite_app(folder(fast)),
            SQLITE_DISK: lambda: sqlite_app(folder(disk)),
            LOG: lambda: bucket_app(MemoryBucket(), "m"),
            STORE_FAST: lambda: bucket_app(LocalBucket(folder(fast)), "t"),
            STORE_DISK: lambda: bucket_app(LocalBucket(folder(disk)), "d"),
            STORE_DATASYNC: lambda: bucket_app(journal_fdatasynced(folder(disk)), "s"),
            PACK_FLOOR: lambda: bucket_app(PackFloor(folder(disk)), "p"),
        }
        figures: dict[str, list[float]] = {label: [] for label in rows}
        ratios, flush_ratios, pack_ratios = [], [], []
        for _ in range(args.rounds):
            got = {label: save_us(make, args.saves) for label, make in rows.items()}
            for label, value in got.items():
                figures[label].append(value)
            ratios.append(got[SQLITE_DISK] / got[STORE_DISK])
            flush_ratios.append(got[STORE_DATASYNC] / got[STORE_DISK])
            pack_ratios.append(got[SQLITE_DISK] / got[PACK_FLOOR])
        creating = file_create_us(disk)
        anchored = "through the anchor" if local_flush.is_ext4(disk_name) else "not ext4: no anchor"
    us = {label: statistics.median(values) for label, values in figures.items()}
    signing = sign_us(max(args.saves, 100))
    library, log = us[LIBRARY], us[LOG]
    sqlite_fast, sqlite_disk, store_fast, store_disk = (us[SQLITE_FAST], us[SQLITE_DISK], us[STORE_FAST],
                                                        us[STORE_DISK])
    where = "tmpfs" if fast_base else "no tmpfs here: the 'tmpfs' rows ran on the scratch folder's disk"
    print(f"one 1-event save, microseconds (median of {args.rounds}; {where}):")
    for label, value in us.items():
        print(f"  {label:48s} {value:8.0f} us")
    print(f"  {'one Ed25519 signature alone':48s} {signing:8.0f} us")
    print(f"  {'create + link + unlink a 500-byte file (disk)':48s} {creating:8.0f} us")
    print("where it goes (above the library's own work):")
    print(f"  store CPU:  SQLite {sqlite_fast - library:6.0f} us; event store {store_fast - library:6.0f} us "
          f"(the log {log - library:.0f}, of which signing {signing:.0f}; files {store_fast - log:.0f})")
    print(f"  durability: SQLite {sqlite_disk - sqlite_fast:6.0f} us; "
          f"event store {store_disk - store_fast:6.0f} us (disk minus tmpfs)")
    print(f"journal flush ({anchored}): saves {statistics.median(flush_ratios):.2f}x as fast as "
          f"with fdatasync ({store_disk:.0f} against {us[STORE_DATASYNC]:.0f} us)")
    print(f"a pack layout's floor (no file per commit; not built): {statistics.median(pack_ratios):.2f}x "
          f"SQLite ({us[PACK_FLOOR]:.0f} against {sqlite_disk:.0f} us)")
    print(f"durable 1-event saves: event store {statistics.median(ratios):.2f}x SQLite synchronous=FULL "
          f"({store_disk:.0f} against {sqlite_disk:.0f} us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
