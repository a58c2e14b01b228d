"""The local bucket is durable by default: the file is on disk before its name, the name before the write
returns; threads publishing into one folder share its fsync. ``?fsync=0`` opts out.

fsync has no visible effect short of a power loss, so these tests watch the calls: ``os.fsync`` is
wrapped (still called) to record what it synced and what the folder showed at that moment.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from storage import AlreadyExists, LocalBucket, open_bucket

NAME = "p/events/000000000001.json"


class FsyncSpy:
    """Records each fsync as ("file", name visible then?) or ("dir", path), then really syncs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Path, *, dir_delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, object]] = []
        self.target, self.dir_delay_s = target, dir_delay_s
        self.lock = threading.Lock()
        real = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                time.sleep(self.dir_delay_s)
                with self.lock:
                    self.calls.append(("dir", os.readlink(f"/proc/self/fd/{fd}")))
            else:
                with self.lock:
                    self.calls.append(("file", self.target.exists()))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def dirs(self) -> list[object]:
        return [what for kind, what in self.calls if kind == "dir"]


def test_a_local_bucket_fsyncs_the_file_before_its_name_and_the_folder_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    spy = FsyncSpy(monkeypatch, bucket.root / NAME)

    bucket.create(NAME, b'{"seq": 1}')

    # the commit's bytes were on disk while its name did not exist yet: it is never visible empty
    assert spy.calls == [("file", False), ("dir", str(bucket.root / "p/events"))]


def test_a_rewrite_is_durable_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = open_bucket((tmp_path / "bucket").as_uri())
    first = bucket.write("views/position.json", b"1")
    spy = FsyncSpy(monkeypatch, tmp_path / "bucket/views/position.json")

    bucket.write("views/position.json", b"2", if_generation_match=first.generation)

    assert [kind for kind, _ in spy.calls] == ["file", "dir"]


def test_fsync_0_opts_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch, tmp_path / "unused")
    by_flag = LocalBucket(tmp_path / "b", fsync=False)
    by_url = open_bucket(f"{(tmp_path / 'a').as_uri()}?fsync=0")
    for i, bucket in enumerate((by_url, by_flag, open_bucket(by_flag.url))):  # its url keeps the opt-out
        bucket.create(f"p/{i}", b"x")

    assert spy.calls == []
    assert open_bucket((tmp_path / "c").as_uri()).fsync and open_bucket(str(tmp_path / "d")).fsync
    with pytest.raises(ValueError, match="fsync"):
        open_bucket(f"{(tmp_path / 'e').as_uri()}?fsync=maybe")


def test_threads_publishing_into_one_folder_share_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/events/000000000000.json", b"0")  # the folder exists: every thread links at once
    spy = FsyncSpy(monkeypatch, tmp_path / "unused", dir_delay_s=0.05)
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
    assert spy.dirs() and len(spy.dirs()) <= 3  # 8 without group commit
    assert [kind for kind, _ in spy.calls].count("file") == 8


def test_a_failed_folder_fsync_is_raised_and_the_next_write_syncs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/a", b"a")
    real, failures = os.fsync, [OSError(5, "I/O error")]

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and failures:
            raise failures.pop()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="I/O error"):
        bucket.create("p/b", b"b")
    spy = FsyncSpy(monkeypatch, tmp_path / "unused")
    bucket.create("p/c", b"c")

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
