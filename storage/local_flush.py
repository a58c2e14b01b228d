"""One write per journal flush on ext4, not two: the records' pages, then the device's cache, without the
journal's inode.

``fdatasync`` of a journal on ext4 writes its records and then, synchronously, the block of the inode
table that holds the journal's inode whenever that block is dirty. It is dirty after almost every
write: each write moves the journal's mtime once the clock has ticked (``HZ`` 250: every 4 ms), and
since Linux 6.13 (multigrain timestamps) sooner, whenever any file's timestamp was read meanwhile (the
local bucket reads one per write: an object's generation is its mtime); a neighbour's change dirties
the same block (16 inodes share one). That second synchronous write cost a durable 1-event save
about 70 µs of its ~550 here (``bench/bench_save_cost.py``; measured alone: 146-153 µs a flush this
way against 215-227 with ``fdatasync``, with the reads and a 300 µs gap between flushes that a save
has).

A journal's record needs none of that metadata to be read back: its blocks were allocated, written
(real zeros) and made durable (``fdatasync``) when the journal grew, so a record overwrites data in
place. So on ext4 a flush is ``sync_file_range`` (write the dirty pages and wait for them: data only)
and then ``fdatasync`` of the anchor, a file never written, whose flush on ext4 issues the device's
cache flush (a barrier) and writes nothing else. The anchor lives in a folder of its own that ext4
places in another block group (the state folder is marked ``FS_TOPDIR_FL``, so its subfolders are
spread like top-level ones), so no busy inode shares its inode-table block.

Elsewhere there is no anchor and the journal is ``fdatasync``-ed as before: tmpfs, XFS, btrfs (a
flush of a clean file may not reach the device there, or ``sync_file_range`` does not exist), and ext4
mounted ``data=journal`` (written-out pages may wait in ext4's own journal for a commit that flushing
the anchor would not make; read from ``/proc/self/mountinfo``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct
from collections.abc import Callable

__all__ = ["ANCHOR", "FLUSH_DIR", "data_in_place", "is_ext4", "open_anchor", "write_out"]

FLUSH_DIR = "flush"
"""Under the local bucket's private state folder (``.bucket/``): the anchor's folder."""
ANCHOR = "anchor"
_EXT4_MAGIC = 0xEF53  # ext2, ext3 and ext4 (one driver)
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000
_FLAGS = struct.Struct("=i")
_SYNC_FILE_RANGE = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER: every dirty page written, and waited for
_STATFS_BYTES = 256  # larger than struct statfs; f_type is its first field (a C long)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def is_ext4(path: str) -> bool:
    """Whether ``path`` is on ext2/3/4 (one driver), by ``statfs``'s ``f_type`` (False where it fails)."""
    if _LIBC is None:
        return False
    buffer = ctypes.create_string_buffer(_STATFS_BYTES)
    if _LIBC.statfs(os.fsencode(path), buffer) != 0:
        return False
    return struct.unpack_from("l", buffer.raw)[0] & 0xFFFFFFFF == _EXT4_MAGIC


def open_anchor(state: str, make_dirs: Callable[[str], None], file_mode: int) -> int | None:
    """The anchor of the bucket whose state folder is ``state`` (created if missing), open; None where the
    filesystem is not ext4 or is mounted ``data=journal`` (then a journal is flushed with ``fdatasync``)."""
    if not is_ext4(state) or not _data_in_place(state):
        return None
    folder = f"{state}/{FLUSH_DIR}"
    if not os.path.isdir(folder):
        _spread_subfolders(state)
        make_dirs(folder)
    fd = os.open(f"{folder}/{ANCHOR}", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, file_mode)
    try:
        os.fsync(fd)  # its name and inode on disk: from now on it stays clean
    except BaseException:
        os.close(fd)
        raise
    return fd


def _data_in_place(path: str) -> bool:
    """Whether file data on the ext4 mount holding ``path`` is written in place (``data=ordered`` or
    ``writeback``), not through ext4's own journal (``data=journal``: written-out pages may wait there for
    a journal commit that flushing the anchor would not make). False when the mount is not found."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return data_in_place(os.path.realpath(path), f.read().splitlines())
    except OSError:
        return False


def data_in_place(real_path: str, mountinfo: list[str]) -> bool:
    """``_data_in_place`` of ``real_path`` (resolved), given the lines of ``/proc/self/mountinfo``: the
    innermost mount holding it (the last mounted, of several on one point) decides."""
    best, options = "", None
    for line in mountinfo:
        mount, _, fs = line.partition(" - ")
        fields = mount.split(" ")
        if not fs or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real_path == point or real_path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, options = point, fs.split()  # fstype, source, superblock options
    if options is None or len(options) < 3 or not options[0].startswith("ext"):
        return False
    return "data=journal" not in options[2].split(",")


def _spread_subfolders(folder: str) -> None:
    """Mark ``folder`` ``FS_TOPDIR_FL``: ext4 places each new subfolder in a block group of its own
    (best effort: without it the anchor may share an inode-table block with busier files, and flushes
    cost a little more)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags = bytearray(_FLAGS.size)  # the kernel reads and writes an int there
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, _FLAGS.pack(_FLAGS.unpack(flags)[0] | _FS_TOPDIR_FL))
        finally:
            os.close(fd)


def write_out(fd: int) -> None:
    """Write every dirty page of ``fd`` to the device and wait for them (no metadata, no cache flush)."""
    assert _LIBC is not None
    if _LIBC.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
