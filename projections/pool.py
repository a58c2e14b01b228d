"""Partitions worked on one at a time, in a bounded pool of processes where that helps.

``map_partitions(work, bucket, partitions)`` calls ``work(bucket, partition, open_app)`` for each
partition and returns the results in the order given. Each partition is opened on a fresh
Application (``apps_on``) whose log is dropped from the process's shared logs (``released``)
before the next: a process holds one partition's log and replay at a time, never every user's.

Given enough partitions (``PARALLEL_FROM``) and more than one CPU, the work is spread over at
most ``workers`` processes (``default_workers``: the CPUs this process may use, at most 8). Each
worker opens the bucket itself from its URL, with this process's ledger (the home and settings its
signatures are checked with, its witness), and is handed partitions in small chunks. A bucket
that cannot be opened again from its URL (in memory, or a wrapper of another) stays in this
process. ``work`` and its result must pickle (a module-level function, or a ``functools.partial``
of one; msgspec Structs).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from projections.replay import apps_on
from storage.bucket import Bucket
from storage.eventstore.ledger import Ledger, LedgerSettings, configure_ledger, ledger_for
from storage.eventstore.log import forget_log
from storage.layout import events_prefix

__all__ = ["PARALLEL_FROM", "default_workers", "map_partitions", "released"]

T = TypeVar("T")
Work = Callable[[Bucket, str, Callable[[str], Any]], T]

PARALLEL_FROM = 32
"""Fewer partitions than this are worked on here: a worker takes ~0.3 s to start (spawned: a fresh
interpreter importing the event store), the audit of a small partition ~10 ms."""

_worker: tuple[Bucket, Callable[[str], Any]] | None = None
"""A worker's bucket and ``open_app`` (set by ``_start_worker``)."""


def default_workers() -> int:
    """The CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _reopenable(bucket: Bucket) -> bool:
    """Whether ``open_bucket(bucket.url)`` opens this same store (a folder or GCS, not a wrapper)."""
    from storage.local import LocalBucket

    if type(bucket) is LocalBucket:
        return True
    if bucket.url.startswith("gs://"):
        from storage.gcs import GcsBucket

        return type(bucket) is GcsBucket
    return False


def map_partitions(
    work: Work[T], bucket: Bucket, partitions: Sequence[str], *, workers: int | None = None
) -> list[T]:
    """``work(bucket, partition, open_app)`` for each of ``partitions``, in order, each on a fresh
    Application released before the next: in up to ``workers`` processes (default
    ``default_workers()``) when there are at least ``PARALLEL_FROM`` partitions and the bucket can be
    opened again from its URL, else here."""
    workers = min(default_workers() if workers is None else workers, len(partitions))
    if workers <= 1 or len(partitions) < PARALLEL_FROM or not _reopenable(bucket):
        open_app = apps_on(bucket)
        return [released(work, bucket, partition, open_app) for partition in partitions]
    ledger = ledger_for(bucket)
    chunk = max(1, min(16, len(partitions) // (workers * 4)))
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no lock or thread of this process inherited
        initializer=_start_worker,
        initargs=(bucket.url, ledger.home, ledger.settings),
    ) as pool:
        return list(pool.map(_in_worker, [(work, p) for p in partitions], chunksize=chunk))


def released(work: Work[T], bucket: Bucket, partition: str, open_app: Callable[[str], Any]) -> T:
    """``work(bucket, partition, open_app)``, then the partition's log dropped from this process's
    shared logs (``forget_log``): its commits go with the Application once the work returns."""
    try:
        return work(bucket, partition, open_app)
    finally:
        forget_log(bucket, events_prefix(partition))


def _start_worker(url: str, home: Path, settings: LedgerSettings) -> None:
    from storage import open_bucket

    global _worker
    bucket = open_bucket(url)
    configure_ledger(bucket, Ledger(bucket, home, settings))
    _worker = (bucket, apps_on(bucket))


def _in_worker(task: tuple[Work[T], str]) -> T:
    assert _worker is not None, "not a worker started by map_partitions"
    work, partition = task
    bucket, open_app = _worker
    return released(work, bucket, partition, open_app)
