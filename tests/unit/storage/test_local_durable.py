"""The local bucket is durable by default: a write's journal record is on disk (one ``fdatasync``; on ext4
its pages written out, then the device flushed through the anchor: ``storage.local_flush``) before its name
appears, and the write returns after both; threads writing at once share the flush.
Uploads and writes too large for the journal fsync the file before its name and the folder after, threads
publishing into one folder sharing its fsync. ``?fsync=0`` opts out.

A flush has no visible effect short of a power loss, so these tests watch the calls: ``os.fsync`` and
``os.fdatasync`` (and ``local_flush.write_out``) are wrapped (still called) to record what they synced and
what the folder showed at that moment. What a power loss leaves is simulated in ``test_local_journal.py``.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from storage import AlreadyExists, LocalBucket, local_flush, open_bucket
from storage.local_journal import MAX_RECORD_BYTES

NAME = "p/events/000000000001.json"


class FsyncSpy:
    """Records each flush: ("file", name visible then?), ("dir", path) or ("journal", name visible then?).

    A journal flush is an ``fdatasync`` of the journal, or of the anchor right after the journal's pages
    were written out (ext4)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Path, *, dir_delay_s: float = 0.0,
                 journal_delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, object]] = []
        self.target, self.dir_delay_s = target, dir_delay_s
        self.lock = threading.Lock()
        real, real_data, real_write_out = os.fsync, os.fdatasync, local_flush.write_out
        written_out = threading.local()

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                time.sleep(self.dir_delay_s)
                with self.lock:
                    self.calls.append(("dir", os.readlink(f"/proc/self/fd/{fd}")))
            else:
                with self.lock:
                    self.calls.append(("file", self.target.exists()))
            real(fd)

        def write_out(fd: int) -> None:
            assert "/.bucket/journal/" in os.readlink(f"/proc/self/fd/{fd}")
            real_write_out(fd)
            written_out.done = True

        def fdatasync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith("/.bucket/flush/anchor"):  # flushes the journal's pages just written out
                assert getattr(written_out, "done", False)
                written_out.done = False
            else:
                assert "/.bucket/journal/" in path
            time.sleep(journal_delay_s)
            with self.lock:
                self.calls.append(("journal", self.target.exists()))
            real_data(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(local_flush, "write_out", write_out)

    def dirs(self) -> list[object]:
        return [what for kind, what in self.calls if kind == "dir"]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


def test_a_write_is_in_the_journal_on_disk_before_its_name_appears_and_nothing_else_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/events/000000000000.json", b"{}")  # this process's journal is made (and flushed) once
    spy = FsyncSpy(monkeypatch, bucket.root / NAME)

    bucket.create(NAME, b'{"seq": 1}')

    # one flush, of the journal, while the commit's name did not exist yet: never visible, then lost
    assert spy.calls == [("journal", False)]
    assert bucket.read(NAME) == b'{"seq": 1}'


def test_a_rewrite_is_durable_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = open_bucket((tmp_path / "bucket").as_uri())
    first = bucket.write("views/position.json", b"1")
    spy = FsyncSpy(monkeypatch, tmp_path / "bucket/views/position.json")

    bucket.write("views/position.json", b"2", if_generation_match=first.generation)

    assert spy.calls == [("journal", True)]  # the old version was visible: the new one only after


def test_uploads_and_writes_too_large_for_the_journal_fsync_the_file_before_its_name_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    spy = FsyncSpy(monkeypatch, bucket.root / "w/big")
    bucket.write("w/big", bytes(MAX_RECORD_BYTES + 1))
    assert spy.calls == [("file", False), ("dir", str(bucket.root / "w"))]

    spy = FsyncSpy(monkeypatch, bucket.root / "u/weights")
    bucket.upload("u/weights", [b"a" * 10, b"b" * 10])
    assert spy.calls == [("file", False), ("dir", str(bucket.root / "u"))]


def test_fsync_0_opts_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch, tmp_path / "unused")
    by_flag = LocalBucket(tmp_path / "b", fsync=False)
    by_url = open_bucket(f"{(tmp_path / 'a').as_uri()}?fsync=0")
    for i, bucket in enumerate((by_url, by_flag, open_bucket(by_flag.url))):  # its url keeps the opt-out
        bucket.create(f"p/{i}", b"x")

    assert spy.calls == []
    assert not any((tmp_path / b / ".bucket/journal").exists() for b in ("a", "b"))
    assert open_bucket((tmp_path / "c").as_uri()).fsync and open_bucket(str(tmp_path / "d")).fsync
    with pytest.raises(ValueError, match="fsync"):
        open_bucket(f"{(tmp_path / 'e').as_uri()}?fsync=maybe")


def test_threads_writing_at_once_share_the_journal_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/events/000000000000.json", b"0")  # the journal exists
    spy = FsyncSpy(monkeypatch, tmp_path / "unused", journal_delay_s=0.05)
    start = threading.Barrier(8)
    done: list[str] = []

    def save(i: int) -> None:
        start.wait()
        bucket.create(f"p/events/{i:012d}.json", b"x")
        done.append(f"p/events/{i:012d}.json")

    threads = [threading.Thread(target=save, args=(i,)) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(done) == 8
    assert set(spy.kinds()) == {"journal"} and len(spy.calls) <= 3  # 8 without group commit


def test_threads_uploading_into_one_folder_share_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.upload("p/data/0", [b"0"])  # the folder exists: every thread links at once
    spy = FsyncSpy(monkeypatch, tmp_path / "unused", dir_delay_s=0.05)
    start = threading.Barrier(8)

    def upload(i: int) -> None:
        start.wait()
        bucket.upload(f"p/data/{i}", [b"x"])

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert spy.dirs() and len(spy.dirs()) <= 3  # 8 without group commit
    assert spy.kinds().count("file") == 8


def test_a_failed_journal_flush_is_raised_publishes_nothing_and_the_next_write_flushes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/a", b"a")
    real, failures = os.fdatasync, [OSError(5, "I/O error")]

    def fdatasync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(OSError, match="I/O error"):
        bucket.create("p/b", b"b")
    assert not bucket.exists("p/b")
    spy = FsyncSpy(monkeypatch, bucket.root / "p/c")
    bucket.create("p/c", b"c")

    assert spy.calls == [("journal", False)]
    assert bucket.read("p/c") == b"c"


def test_a_failed_folder_fsync_is_raised_and_the_next_upload_syncs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.upload("p/a", [b"a"])
    real, failures = os.fsync, [OSError(5, "I/O error")]

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and failures:
            raise failures.pop()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="I/O error"):
        bucket.upload("p/b", [b"b"])
    spy = FsyncSpy(monkeypatch, tmp_path / "unused")
    bucket.upload("p/c", [b"c"])

    assert spy.dirs() == [str(bucket.root / "p")]


def test_a_create_only_write_to_a_taken_name_fails_before_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # writers racing for the next commit of a log: each loser would otherwise pay a wasted fsync
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create(NAME, b'{"seq": 1}')
    spy = FsyncSpy(monkeypatch, bucket.root / NAME)

    with pytest.raises(AlreadyExists):
        bucket.create(NAME, b'{"seq": 1, "other": true}')

    assert spy.calls == []
    assert bucket.read(NAME) == b'{"seq": 1}'
