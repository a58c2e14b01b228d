"""Bench: durable 1-event saves as a partition grows, event store against SQLite in the same run.

``bench_eventstore.py`` times saves on a fresh partition. A platform's partitions grow (a heavy user's
holds tens of thousands of aggregates), and a save whose cost grows with them falls behind SQLite, whose
B-tree insert grows with the log of the table. This grows one partition (LocalBucket ``fsync=1``) and
one SQLite database (``synchronous=FULL``) by the same 1-event saves, one new aggregate each, on the
disk under ``$BENCH_DIR``, and at each size in ``--sizes`` times ``--windows`` windows of ``--saves`` more
saves on each, the two stores in turn. A row per size (the median window of each); then each store's rate
at the last size against its own rate at the first.

SQLite here is timed past its first thousand saves, its WAL file already grown (a live database's state):
a save then costs 250-300 us on these disks, against 320-390 in ``bench_eventstore.py`` and
``bench_save_cost.py``, whose fresh databases grow their WAL while timed (each flush then also records
the file's new size). The event store's journal is preallocated from its first save.

Writing the log index at every segment boundary (it costs time in proportion to the whole log) made the
event store's save grow from 268 to 392 us between 1,024 and 32,768 aggregates (tmpfs, no fsync); with
the index spaced (``storage.eventstore.log.INDEX_SPACING``) the cost stays flat.

    .venv/bin/python bench/bench_save_growth.py [--sizes 1000,8000,32000] [--saves 1000] [--windows 3]
    .venv/bin/python bench/bench_save_growth.py --smoke   # seconds: only checks that it runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_eventstore import bucket_app, saves_per_second, sqlite_app  # noqa: E402
from scratch import file_create_us, scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402

from storage import LocalBucket  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,8000,32000",
                        help="aggregates already saved when each row is timed (ascending, comma-separated)")
    parser.add_argument("--saves", type=int, default=1000, help="1-event saves in each timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows a size (the median shown)")
    args = parse_args(parser, sizes="20,60", saves=20, windows=1)
    sizes = [int(size) for size in args.sizes.split(",")]
    if sizes != sorted(sizes) or sizes[0] < 0:
        parser.error("--sizes must be ascending and not negative")
    with scratch_dir("growth-") as where:
        folder = Path(where)
        os.environ["TUNE_HOME"] = str(folder / "home")  # this run's signing keys
        (folder / "sqlite").mkdir()
        sqlite = sqlite_app(folder / "sqlite")
        store = bucket_app(LocalBucket(folder / "bucket"), "growth")
        saved = 0
        rows: list[tuple[int, float, float]] = []
        for size in sizes:
            for app in (sqlite, store):
                saves_per_second(app, size - saved, 1)  # grow both to ``size``
            saved = size
            sqlite_us, store_us = [], []
            for _ in range(args.windows):  # the two in turn: the disk swings from minute to minute
                sqlite_us.append(1e6 / saves_per_second(sqlite, args.saves, 1))
                store_us.append(1e6 / saves_per_second(store, args.saves, 1))
            saved += args.saves * args.windows
            rows.append((size, statistics.median(sqlite_us), statistics.median(store_us)))
        creating = file_create_us(folder)
    print(f"durable 1-event saves as one partition grows (us a save, median of {args.windows} windows of "
          f"{args.saves} saves at each size; "
          f"create + link + unlink of a file here now: {creating:.0f} us):")
    print(f"  {'aggregates':>10s} {'SQLite':>9s} {'event store':>12s}   event store / SQLite")
    for size, sqlite_us, store_us in rows:
        print(f"  {size:>10,d} {sqlite_us:>9.0f} {store_us:>12.0f}   {sqlite_us / store_us:.2f}x")
    first, last = rows[0], rows[-1]
    print(f"growth from {first[0]:,d} to {last[0]:,d} aggregates: event store {first[2] / last[2]:.2f}x its "
          f"first rate, SQLite {first[1] / last[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
