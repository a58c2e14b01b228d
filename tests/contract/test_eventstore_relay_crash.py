"""The relay under SIGKILL (issue 12 item 7): writer processes hand their batches to the partition's
leader, and the test kills the leader, again and again, while they do.

Afterwards, on the folder and on fake-gcs-server: every save a process saw succeed is in the log
exactly once, notification ids run 1..n without a gap, the chain (signatures included) verifies,
batches were relayed (commits hold their tokens), and after each kill the surviving writers went on
(a new leader, or direct writes) within a few seconds.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from storage import Bucket, open_bucket
from storage.eventstore import open_application, verify_chain
from storage.eventstore.commits import commit_name, decode_commit
from storage.eventstore.ledger import ledger_for
from storage.eventstore.relay import Lease, relay_tokens
from storage.layout import PLATFORM, PLATFORM_EVENTS
from tests.accounts import Account, Accounts

_FORK = multiprocessing.get_context("fork")
WRITERS = 6
KILLS = 3
RESUMED_WITHIN_S = 5.0


def _writer(url: str, acks: str, until: float) -> None:
    """Save new accounts until ``until``; append each acknowledged one to the file ``acks`` (a file of its
    own: a SIGKILL cannot leave a lock held, as it could a multiprocessing queue's)."""
    os.environ["TUNE_RELAY"] = "on"
    app = open_application(Accounts, open_bucket(url), PLATFORM_EVENTS)
    with open(acks, "a") as out:
        while time.time() < until:
            account = Account()
            app.save(account)
            out.write(f"{account.id} {time.time():.3f}\n")
            out.flush()


def _leader_pid(bucket: Bucket) -> int | None:
    for name in bucket.list(f"{PLATFORM}/writers/"):
        try:
            lease = msgspec.json.decode(bucket.read(name), type=Lease)
        except Exception:  # being rewritten: look again
            return None
        if lease.expires > time.time():
            return lease.pid
    return None


@pytest.mark.slow  # ~10-20 s: the writers run while the leader is killed three times
def test_killing_the_leader_loses_and_duplicates_nothing(
        bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_RELAY", "off")  # this process only checks; the writers relay
    setup = open_application(Accounts, bucket, PLATFORM_EVENTS)
    setup.save(Account())  # the key in the keyring, the partition started
    gcs = not bucket.url.startswith("file:")
    start_s, every_s = (4.0, 3.0) if gcs else (2.0, 2.0)
    until = time.time() + start_s + every_s * KILLS + 3.0
    files = [tmp_path / f"acks-{me}.txt" for me in range(WRITERS)]
    workers = [_FORK.Process(target=_writer, args=(bucket.url, str(f), until)) for f in files]
    for worker in workers:
        worker.start()
    killed: list[tuple[int, float]] = []
    try:
        time.sleep(start_s)
        while len(killed) < KILLS and time.time() < until - 3.0:
            pid = _leader_pid(bucket)
            alive = {w.pid for w in workers if w.exitcode is None}
            if pid in alive and pid not in {p for p, _ in killed}:
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, time.time()))
                time.sleep(every_s)
            else:
                time.sleep(0.1)
        for worker in workers:
            worker.join(timeout=120)
    finally:
        for worker in workers:
            if worker.exitcode is None:
                worker.kill()
    assert len(killed) == KILLS, f"killed {len(killed)} leaders: the writers never elected one"
    killed_pids = {pid for pid, _ in killed}
    for worker in workers:
        assert worker.exitcode == (-signal.SIGKILL if worker.pid in killed_pids else 0), worker

    acks: list[tuple[str, float]] = []
    for path in files:
        for line in path.read_text().splitlines():
            account_id, _, at = line.partition(" ")
            if len(account_id) == 36 and at.count(".") == 1:  # a killed writer's last line may be torn
                acks.append((account_id, float(at)))
    fresh = open_bucket(bucket.url)
    reader = open_application(Accounts, fresh, PLATFORM_EVENTS)  # nothing cached
    notifications = reader.recorder.select_notifications(None, 1_000_000)
    logged = Counter((str(n.originator_id), n.originator_version) for n in notifications)

    assert [n.id for n in notifications] == list(range(1, len(notifications) + 1))
    assert max(logged.values()) == 1, "a version was recorded twice"
    assert {(account_id, 1) for account_id, _ in acks} <= set(logged), "an acknowledged save is missing"
    assert len(acks) > 50
    keyring = ledger_for(fresh).keyring()
    assert verify_chain(fresh, PLATFORM_EVENTS, signatures=True, keyring=keyring).ok
    tail = reader.recorder.log.index.tail_seq
    relayed = sum(bool(relay_tokens(decode_commit(fresh.read(commit_name(PLATFORM_EVENTS, seq))).nonce))
                  for seq in range(1, tail + 1))
    assert relayed > 0, "no batch was relayed: this proves nothing"
    for _, at in killed:
        assert any(at < ack <= at + RESUMED_WITHIN_S for _, ack in acks), \
            f"no save was acknowledged within {RESUMED_WITHIN_S} s of killing the leader"
