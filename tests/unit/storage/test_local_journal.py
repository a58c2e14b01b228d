"""The local bucket's write-ahead journal (``storage.local_journal``): what a power loss leaves is restored.

A power loss is simulated in three steps: a writer process acknowledges its writes and is killed
(SIGKILL: its journal is left as it was, nothing checkpointed); the test then does to the published
objects what the lost page cache would (an object gone, or empty under the generation it was stamped
with) and may tear the journal's last record (its write was under way: never acknowledged); finally a
new boot id (``/proc/sys/kernel/random/boot_id`` changes on every boot) is what the next open sees.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from storage import LocalBucket, local_journal
from storage.eventstore import verify_chain
from storage.eventstore.commits import commit_name
from storage.eventstore.log import PartitionLog

_FORK = multiprocessing.get_context("fork")
PREFIX = "platform/events/"


def in_killed_process(work: Callable[[], None]) -> None:
    """Run ``work`` in a child process, then SIGKILL it (after its writes were acknowledged)."""

    def child() -> None:
        work()
        os.kill(os.getpid(), signal.SIGKILL)

    process = _FORK.Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL


def journals(root: Path) -> list[Path]:
    return sorted((root / ".bucket/journal").glob("*.jnl"))


def reboot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_journal, "boot_id", lambda: "00000000-0000-4000-8000-000000000000")


def lose(root: Path, name: str, *, empty: bool) -> None:
    """What a power loss can leave of an object published without a flush: nothing, or an empty file
    (its name and stamped generation were on disk, its bytes not)."""
    path = root / name
    if not empty:
        path.unlink()
        return
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"")
    os.utime(path, ns=(mtime, mtime))


def tear_last_record(journal: Path) -> None:
    """Flip a byte of the journal's last record: its write was cut by the power loss."""
    records = local_journal.read_records(journal)
    data = journal.read_bytes()
    last = records[-1]
    at = data.index(last.name.encode() + last.data) + len(last.name) + len(last.data) - 1
    with open(journal, "r+b") as f:
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))


def test_objects_acknowledged_before_a_power_loss_are_restored_and_a_torn_last_record_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bucket"
    gens: dict[str, int] = {}

    def write() -> None:
        bucket = LocalBucket(root)
        for name in ("a/kept", "a/gone", "a/emptied", "a/deleted"):
            bucket.create(name, name.encode())
        bucket.write("a/rewritten", b"old")
        bucket.write("a/rewritten", b"new")
        bucket.delete("a/deleted")
        bucket.create("a/torn", b"a/torn")

    in_killed_process(write)
    for name in ("a/kept", "a/gone", "a/emptied", "a/rewritten"):
        gens[name] = (root / name).stat().st_mtime_ns
    [journal] = journals(root)
    lose(root, "a/gone", empty=False)
    lose(root, "a/emptied", empty=True)
    lose(root, "a/rewritten", empty=True)
    lose(root, "a/torn", empty=False)
    tear_last_record(journal)  # a/torn's record: its write was the one the power loss cut short

    reboot(monkeypatch)
    bucket = LocalBucket(root)

    assert bucket.read("a/kept") == b"a/kept"
    assert bucket.read("a/gone") == b"a/gone" and bucket.stat("a/gone").generation == gens["a/gone"]
    assert bucket.read("a/emptied") == b"a/emptied"
    assert bucket.read("a/rewritten") == b"new"
    assert bucket.stat("a/rewritten").generation == gens["a/rewritten"]
    assert not bucket.exists("a/torn")  # its record was torn: never acknowledged, not restored
    assert not bucket.exists("a/deleted")  # its delete was journaled too
    assert local_journal.read_records(journal) == []  # recovered: a new lap, in this boot
    assert list(bucket.list("")) == ["a/emptied", "a/gone", "a/kept", "a/rewritten"]


def test_a_deleted_object_and_a_newer_write_are_not_undone_by_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bucket"

    def write() -> None:
        bucket = LocalBucket(root)
        bucket.create("a/deleted", b"1")
        bucket.delete("a/deleted")
        bucket.create("a/replaced", b"journaled")

    in_killed_process(write)
    LocalBucket(root, fsync=False).write("a/replaced", b"newer, not journaled")

    reboot(monkeypatch)
    bucket = LocalBucket(root)

    assert not bucket.exists("a/deleted")
    assert bucket.read("a/replaced") == b"newer, not journaled"


def test_without_a_reboot_nothing_is_restored_and_a_killed_writers_journal_is_reused(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    in_killed_process(lambda: LocalBucket(root).create("a/1", b"1"))
    (root / "a/1").unlink()  # removed behind the bucket's back, in the same boot: the page cache had it

    bucket = LocalBucket(root)
    assert not bucket.exists("a/1")
    bucket.create("a/2", b"2")  # this process adopts the dead writer's journal (checkpointed first)

    [journal] = journals(root)
    assert [r.name for r in local_journal.read_records(journal)] == ["a/2"]


def test_a_full_journal_is_checkpointed_and_reused_from_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_journal, "CAPACITY", 64 * 1024)

    def write() -> None:
        bucket = LocalBucket(tmp_path / "bucket")
        for i in range(200):
            bucket.create(f"a/{i:03d}", bytes(1000))

    in_killed_process(write)

    [journal] = journals(tmp_path / "bucket")
    names = [r.name for r in local_journal.read_records(journal)]
    assert journal.stat().st_size <= 1 << 20  # grown once (1 MiB), then reused
    assert 0 < len(names) < 70 and names[-1] == "a/199"  # only the records of the last lap replay
    assert names == [f"a/{i:03d}" for i in range(200 - len(names), 200)]


def test_a_commit_acknowledged_before_a_power_loss_is_read_back_and_the_chain_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bucket"
    states = [f'{{"i":{i}}}'.encode() for i in range(5)]

    def save() -> None:
        log = PartitionLog(LocalBucket(root), PREFIX)
        for state in states:
            log.append([StoredEvent(uuid.uuid4(), 1, "tests:Thing.Happened", state)])

    in_killed_process(save)
    lose(root, commit_name(PREFIX, 4), empty=False)  # a commit with a successor: would be "missing"
    lose(root, commit_name(PREFIX, 5), empty=True)  # the last: would be read as absent, its events gone

    reboot(monkeypatch)
    bucket = LocalBucket(root)
    log = PartitionLog(bucket, PREFIX)

    assert [n.state for n in log.select_notifications(1, 10)] == states
    assert verify_chain(bucket, PREFIX).ok
