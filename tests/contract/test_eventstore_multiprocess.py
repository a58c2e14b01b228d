"""Several OS processes saving to the same aggregates on one bucket (folder, fake-gcs-server).

Each process loads, changes and saves shared accounts, retrying on the
version conflict (IntegrityError). Afterwards: every save a process saw
succeed is in the log, no (aggregate, version) appears twice, notification
ids run 1..n without a gap, balances add up, and the hash chain is intact.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from storage import Bucket, open_bucket
from storage.eventstore import open_application, verify_chain
from storage.layout import PLATFORM_EVENTS
from tests.accounts import Account, Accounts

_FORK = multiprocessing.get_context("fork")
PROCESSES = 6
SAVES_EACH = 25
ACCOUNTS = 3


def _saver(url: str, account_ids: list[UUID], me: int, barrier: object, out: object) -> None:
    app = open_application(Accounts, open_bucket(url), PLATFORM_EVENTS)
    rng = random.Random(me)
    saved, conflicts = [], 0
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(SAVES_EACH):
        account_id = rng.choice(account_ids)
        while True:
            account: Account = app.repository.get(account_id)
            account.credit(1)
            try:
                app.save(account)
            except IntegrityError:
                conflicts += 1
                continue
            saved.append((str(account_id), account.version))
            break
    out.put((saved, conflicts))  # type: ignore[attr-defined]


def _next_result(out: Any, workers: list[Any]) -> Any:
    """The next worker's result; fail as soon as a worker has died instead of waiting out the timeout."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=0.5)
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not dead, f"a saver process died (exit codes {dead}); see its traceback above"
    raise AssertionError("the saver processes did not finish in 240 s")


@pytest.mark.slow  # a few seconds; up to ~10 s on fake-gcs-server on a busy machine
def test_processes_racing_on_shared_aggregates_lose_nothing(bucket: Bucket) -> None:
    setup = open_application(Accounts, bucket, PLATFORM_EVENTS)
    accounts = [Account() for _ in range(ACCOUNTS)]
    setup.save(*accounts)
    account_ids = [account.id for account in accounts]
    barrier, out = _FORK.Barrier(PROCESSES), _FORK.Queue()
    workers = [
        _FORK.Process(target=_saver, args=(bucket.url, account_ids, me, barrier, out))
        for me in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    results = [_next_result(out, workers) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    reader = open_application(Accounts, open_bucket(bucket.url), PLATFORM_EVENTS)  # nothing cached
    notifications = reader.recorder.select_notifications(None, 10_000)
    saved = [pair for process_saved, _ in results for pair in process_saved]
    logged = Counter((str(n.originator_id), n.originator_version) for n in notifications)

    assert len(saved) == PROCESSES * SAVES_EACH
    assert [n.id for n in notifications] == list(range(1, ACCOUNTS + len(saved) + 1))
    assert max(logged.values()) == 1, "a version was recorded twice"
    assert set(saved) <= set(logged), "a save that succeeded is missing from the log"
    for account_id in account_ids:
        versions = sorted(v for oid, v in logged if oid == str(account_id))
        assert versions == list(range(1, len(versions) + 1))
        assert reader.repository.get(account_id).balance == len(versions) - 1
    assert sum(conflicts for _, conflicts in results) > 0, "the processes never raced: this proves nothing"
    assert verify_chain(bucket, PLATFORM_EVENTS).ok
