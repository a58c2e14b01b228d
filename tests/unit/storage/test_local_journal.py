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
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from eventsourcing.persistence import StoredEvent

from storage import LocalBucket, local, local_journal
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


# -- writers racing for a name: one killed between its record and its link ---------------------------


def _set_clock(clock_ns: int | None) -> None:
    """In a writer process: its wall clock reads ``clock_ns`` (None: the real one)."""
    if clock_ns is not None:
        local.time = SimpleNamespace(time_ns=lambda: clock_ns, time=time.time)  # type: ignore[attr-defined]


Work = Callable[[LocalBucket], object]


def race(root: Path, killed: Work, acknowledged: Work, *, setup: Work = LocalBucket._journal,
         killed_clock: int | None = None, acknowledged_clock: int | None = None) -> None:
    """Two writer processes, each with its own journal: the first runs ``setup``, then the second runs
    ``killed`` and is SIGKILLed at its first link or rename (its record durable, no cancel record); then
    the first runs ``acknowledged`` to the end and is killed too. A clock given is what that writer's
    wall clock reads (one set ahead and stepped back later, or the same tick for both)."""
    ready, go = _FORK.Event(), _FORK.Event()

    def first() -> None:
        _set_clock(acknowledged_clock)
        bucket = LocalBucket(root)
        setup(bucket)
        ready.set()
        assert go.wait(30)
        acknowledged(bucket)
        os.kill(os.getpid(), signal.SIGKILL)

    def second() -> None:
        _set_clock(killed_clock)
        LocalBucket._place = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign]
        killed(LocalBucket(root))

    process = _FORK.Process(target=first)
    process.start()
    try:
        assert ready.wait(30)
        in_killed_process(second)
    finally:
        go.set()
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    assert len(journals(root)) == 2


AHEAD = 60 * 10**9  # the killed writer's clock, stepped back by a minute before the next write


@pytest.mark.parametrize("winner", ["kept", "lost", "emptied"])
@pytest.mark.parametrize("clocks", ["stepped back after the killed writer", "the same tick for both writers"])
def test_a_killed_writers_create_never_replaces_the_acknowledged_winners_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clocks: str, winner: str
) -> None:
    root, name, now = tmp_path / "bucket", commit_name(PREFIX, 1), time.time_ns()
    race(root, lambda bucket: bucket.create(name, b"killed, never acknowledged"),
         lambda bucket: bucket.create(name, b"acknowledged"),
         killed_clock=now + AHEAD if clocks.startswith("stepped") else now, acknowledged_clock=now)
    if winner != "kept":
        lose(root, name, empty=winner == "emptied")

    reboot(monkeypatch)

    assert LocalBucket(root).read(name) == b"acknowledged"


def _overwrite(data: bytes) -> Work:
    return lambda bucket: bucket.write("a/state.json", data,
                                       if_generation_match=bucket.stat("a/state.json").generation)


@pytest.mark.parametrize("winner", ["kept", "emptied"])
def test_a_killed_writers_conditional_write_never_replaces_a_later_acknowledged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, winner: str
) -> None:
    root = tmp_path / "bucket"
    # both read "base" (the killed one never linked), and meet their precondition
    race(root, _overwrite(b"killed"), _overwrite(b"acknowledged"),
         setup=lambda bucket: bucket.create("a/state.json", b"base"), killed_clock=time.time_ns() + AHEAD)
    if winner == "emptied":
        lose(root, "a/state.json", empty=True)

    reboot(monkeypatch)

    assert LocalBucket(root).read("a/state.json") == b"acknowledged"


def test_a_killed_writers_record_does_not_bring_back_a_name_deleted_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bucket"
    race(root, _overwrite(b"killed"), lambda bucket: bucket.delete("a/state.json"),  # deletes "base"
         setup=lambda bucket: bucket.create("a/state.json", b"base"))

    reboot(monkeypatch)

    assert not LocalBucket(root).exists("a/state.json")


def test_a_failed_writes_cancel_drops_that_write_only_and_is_on_disk_before_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, name = tmp_path / "bucket", "a/state.json"
    synced: list[list[int]] = []  # the journal's record kinds at each flush
    real = local_journal.Journal._flush

    def flush(journal: local_journal.Journal) -> None:
        real(journal)
        synced.append([r.kind for r in local_journal.read_records(journal.path)])

    def write() -> None:
        bucket = LocalBucket(root)
        bucket.write(name, b"acknowledged")
        monkeypatch.setattr(local_journal.Journal, "_flush", flush)
        monkeypatch.setattr(LocalBucket, "_place", lambda *args, **kwargs: _raise(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            bucket.write(name, b"failed")
        assert synced[-1] == [local_journal.PUT, local_journal.PUT, local_journal.CANCEL]

    in_killed_process(write)
    lose(root, name, empty=False)

    reboot(monkeypatch)

    assert LocalBucket(root).read(name) == b"acknowledged"


def _raise(exc: Exception) -> None:
    raise exc
