"""How a durable local bucket flushes its journal (``storage.local_flush``): on ext4 the records' pages are
written out and the device flushed through the anchor, a file never written, so the journal's inode is not
written each time; the journal's blocks are made durable when it grows, before a record lands in them.
Elsewhere the journal is ``fdatasync``-ed. A flush has no visible effect short of a power loss, so these
tests watch the calls (still made)."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
from pathlib import Path

import pytest

from storage import LocalBucket, local_flush, local_journal

TMPFS = Path("/dev/shm")


def require_ext4(path: Path) -> None:
    if not local_flush.is_ext4(str(path)):
        pytest.skip(f"{path} is not on ext4")


class FlushSpy:
    """Records ("write_out", journal size), ("fdatasync", path, journal size) in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[object, ...]] = []
        real_sync, real_write_out = os.fdatasync, local_flush.write_out

        def fdatasync(fd: int) -> None:
            real_sync(fd)
            self.calls.append(("fdatasync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))

        def write_out(fd: int) -> None:
            assert "/.bucket/journal/" in os.readlink(f"/proc/self/fd/{fd}")
            real_write_out(fd)
            self.calls.append(("write_out", os.fstat(fd).st_size))

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(local_flush, "write_out", write_out)


def test_on_ext4_each_write_writes_the_journal_out_then_flushes_the_device_through_the_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_ext4(tmp_path)
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/0", b"first")  # this process's journal is made (and flushed) once
    spy = FlushSpy(monkeypatch)

    bucket.create("p/1", b"one")
    bucket.write("p/1", b"one, again")

    anchor = tmp_path / "bucket/.bucket/flush/anchor"
    assert [call[0] for call in spy.calls] == ["write_out", "fdatasync"] * 2
    assert {call[1] for call in spy.calls if call[0] == "fdatasync"} == {str(anchor)}
    assert anchor.stat().st_size == 0  # never written: its flush writes nothing but the device's cache
    [journal] = (tmp_path / "bucket/.bucket/journal").glob("*.jnl")
    records = local_journal.read_records(journal)
    assert [record.data for record in records] == [b"first", b"one", b"one, again"]
    assert bucket.read("p/1") == b"one, again"


def test_on_ext4_a_growing_journal_makes_its_new_blocks_durable_before_a_record_is_flushed_in_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_ext4(tmp_path)
    monkeypatch.setattr(local_journal, "_GROW", 8192)  # grows every few writes
    bucket = LocalBucket(tmp_path / "bucket")
    spy = FlushSpy(monkeypatch)

    for i in range(12):
        bucket.create(f"p/{i}", os.urandom(3000))

    durable = 0  # the journal's size at its latest fdatasync: blocks allocated on disk up to there
    sizes = []
    for call in spy.calls:
        if call[0] == "fdatasync" and "/.bucket/journal/" in str(call[1]):
            durable = max(durable, int(call[2]))  # type: ignore[call-overload]
        elif call[0] == "write_out":
            assert int(call[1]) <= durable  # type: ignore[call-overload]
            sizes.append(call[1])
    assert len(sizes) == 12 and max(sizes) > min(sizes)  # it grew; each record flushed through the anchor


def test_on_ext4_the_anchors_folder_is_spread_to_a_block_group_of_its_own(tmp_path: Path) -> None:
    require_ext4(tmp_path)
    bucket = LocalBucket(tmp_path / "bucket")
    bucket.create("p/0", b"x")

    fd = os.open(tmp_path / "bucket/.bucket", os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, flags)  # FS_IOC_GETFLAGS
    finally:
        os.close(fd)
    assert struct.unpack("=i", flags)[0] & 0x00020000  # FS_TOPDIR_FL: its subfolders are spread


def test_elsewhere_the_journal_is_fdatasynced_and_there_is_no_anchor(monkeypatch: pytest.MonkeyPatch) -> None:
    if not TMPFS.is_dir() or local_flush.is_ext4(str(TMPFS)):
        pytest.skip("no tmpfs at /dev/shm")
    root = Path(os.path.realpath(TMPFS)) / f"tune-test-flush-{os.getpid()}"
    try:
        bucket = LocalBucket(root)
        bucket.create("p/0", b"first")
        spy = FlushSpy(monkeypatch)

        bucket.create("p/1", b"one")

        [(kind, path, _)] = spy.calls
        assert kind == "fdatasync" and "/.bucket/journal/" in str(path)
        assert not (root / ".bucket/flush").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


MOUNTINFO = [
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resuid=65534",
    "31 27 0:30 / /dev/shm rw,nosuid - tmpfs tmpfs rw,size=65536k",
    "40 27 254:16 / /srv/journaled rw,relatime - ext4 /dev/vdb rw,data=journal",
    "41 27 254:32 / /srv/my\\040data rw,relatime - ext3 /dev/vdc rw,data=ordered",
    "42 27 0:40 / /srv/xfs rw,relatime - xfs /dev/vdd rw,attr2",
]


@pytest.mark.parametrize(("path", "in_place"), [
    ("/root/bucket", True),  # ext4, data=ordered by default
    ("/srv/journaled/bucket", False),  # data=journal: pages written out may wait for ext4's journal
    ("/srv/journaledness", True),  # not under /srv/journaled
    ("/srv/my data/bucket", True),  # a mount point with a space (\040)
    ("/dev/shm/bucket", False),  # tmpfs
    ("/srv/xfs/bucket", False),  # not ext4: a clean file's fsync may not flush the device there
])
def test_the_anchor_is_used_only_where_ext4_writes_file_data_in_place(path: str, in_place: bool) -> None:
    assert local_flush.data_in_place(path, MOUNTINFO) is in_place
