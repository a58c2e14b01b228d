"""The write-ahead journal of a durable ``LocalBucket``: one ``fdatasync`` per write, not two ``fsync``.

Publishing an object durably the plain way costs two flushes (the temp file's fsync before its name is
placed, the folder's after), and on ext4 each one commits the filesystem's own journal. SQLite's WAL
pays one ``fdatasync`` of a preallocated file it keeps reusing. This is that, for the bucket:

* Each writing process owns one journal file, ``<root>/.bucket/journal/<token>.jnl`` (an exclusive
  ``flock`` held for as long as the process lives says it is in use). A write appends one record
  (name, generation, bytes; length- and CRC-32-framed, tagged with the journal's salt and a record
  number) and flushes the journal: ``fdatasync``, or on ext4 its pages written out and the device's
  cache flushed through an anchor file, so that the journal's inode is not written each time
  (``storage.local_flush``); only then is the object published (temp file linked or renamed over the
  name, without any fsync). Threads of one process that write at once share one flush (group
  commit: a flush covers every record written before it began).
* The file is grown by writing real zeros (never ``fallocate``: unwritten extents would make each
  ``fdatasync`` a metadata commit too), ``fdatasync``-ed as it grows, and reused from its start once
  full, so a record lands in blocks that exist already, on disk, and a flush writes data only.
* Checkpoint: before the journal is reused, ``syncfs`` puts every object it published (bytes and
  names) on disk; then a new salt in its header makes every old record stale.

Why nothing acknowledged can be lost, or half-read:

* A write returns after its record is on disk and its name is placed. A power loss may then lose the
  object's bytes or its name (neither was flushed), never the record: the record was on disk before
  the name could be seen, so any process that read the object, and any write made from what it read,
  came after the record was durable.
* Recovery: the first ``LocalBucket`` opened on the folder after a reboot (a journal whose header holds
  another boot id: ``/proc/sys/kernel/random/boot_id``) takes the recovery lock and, before it reads
  anything, restores from every journal each object that is missing, or holds other bytes under a
  generation no newer than its record's (empty, torn, or the older version of a rename the disk did
  not keep); a name whose newest record is a delete is left as it is. Restored objects are published
  the plain durable way (fsync, rename, folder fsync) with their recorded generation. Without a
  reboot the page cache still holds every published object: a process killed (SIGKILL) at any point
  leaves its records for the next reboot or the next writer that adopts its journal (which
  checkpoints it first), nothing to restore.
* A torn record (power lost during its write: it was never acknowledged) fails its CRC, and so does
  anything after it; replay stops at the first record that is torn, carries another salt, or breaks
  the numbering, so stale records of an earlier lap are never replayed.
* Why the newest record of a name is the one to restore: the bucket stamps a write's generation
  under the name's lock above the last generation stamped under that lock (``storage.local``), and
  notes it there before the record is appended. So for one name generations rise in the order writers
  took the lock, whatever the clock did and even for a writer killed between its record and its link:
  the next writer's generation is higher, and a delete's record carries a fresh stamp in the same
  order. A record outranked by a later writer's therefore never replaces that writer's acknowledged
  object (writers racing for the next commit of an event log: the loser killed after its record was
  durable, the winner acknowledged; the winner's object is kept, or restored if the power loss took
  it). A record stays the newest only if no write or delete of the name began after it.
* A record whose write then failed (its name turned out to be taken or under an object) is followed,
  on disk before the error is raised, by a cancel record of the same journal: that record alone is
  dropped (an earlier record of the name, acknowledged, stays). One left by a process killed before
  its link publishes, after a reboot, a write that was never acknowledged (as a crash just after the
  link does today), but only where it is the newest: no write or delete of the name began after it,
  so it replaces nothing acknowledged later (a create-only one found the name free, a conditional
  one found its precondition met, and nothing changed the name since).

Not journaled (published the plain durable way): ``upload`` (streamed, large) and writes above
``MAX_RECORD_BYTES``. Deletes append a record without a sync (a delete was never synced). One
machine only: a folder shared by several machines over a network filesystem cannot use boot ids.
An object removed behind the bucket's back (not with ``delete``) in the last checkpoint interval
before a power loss comes back after it. Where ``fdatasync`` or a boot id does not exist (not Linux),
the bucket keeps the two-fsync path.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from storage import local_flush
from storage.group_commit import GroupCommit

__all__ = [
    "JOURNAL_DIR",
    "MAX_RECORD_BYTES",
    "Journal",
    "Record",
    "acquire",
    "boot_id",
    "read_records",
    "recover",
]

JOURNAL_DIR = "journal"
"""Under the local bucket's private state folder (``.bucket/``), outside the object namespace."""
MAX_RECORD_BYTES = 1 << 20
"""Larger writes are not journaled (they are published the plain durable way)."""
CAPACITY = 16 << 20
"""A journal is checkpointed and reused from its start once this full."""
_GROW = 1 << 20  # zeros written ahead at a time (one metadata flush per MiB of records)
_HEADER_BYTES = 4096
_MAGIC = b"TUNEJNL1"
_HEADER = struct.Struct("<8sI36sI")  # magic, salt, boot id, crc32
_RECORD = struct.Struct("<4sIQQBHII")  # magic, salt, number, generation, kind, name len, data len, crc32
_RECORD_MAGIC = b"JREC"
PUT, DELETE, CANCEL = 1, 2, 3
_SUFFIX = ".jnl"
_log = logging.getLogger(__name__)


class Record(NamedTuple):
    """One journal record: ``kind`` PUT (``data`` published at ``generation``), DELETE (stamped like a
    write) or CANCEL (of this journal's PUT of ``name`` at ``generation``)."""

    kind: int
    name: str
    generation: int
    data: bytes


def boot_id() -> str | None:
    """This boot of the machine (None where the kernel does not say: then nothing is journaled)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip().decode("ascii")[:36]
    except OSError:
        return None


def available() -> bool:
    return hasattr(os, "fdatasync") and boot_id() is not None


# -- the file format -----------------------------------------------------------------


def _header(salt: int, boot: str) -> bytes:
    fields = _MAGIC + salt.to_bytes(4, "little") + boot.encode("ascii").ljust(36)
    return _HEADER.pack(_MAGIC, salt, boot.encode("ascii").ljust(36), zlib.crc32(fields)).ljust(_HEADER_BYTES,
                                                                                            b"\0")


def _read_header(fd: int) -> tuple[int, str] | None:
    """``(salt, boot id)``, or None if the file has no valid header."""
    raw = os.pread(fd, _HEADER.size, 0)
    if len(raw) < _HEADER.size:
        return None
    magic, salt, boot, crc = _HEADER.unpack(raw)
    if magic != _MAGIC or zlib.crc32(raw[: _HEADER.size - 4]) != crc:
        return None
    return salt, boot.decode("ascii").strip()


def _record(salt: int, number: int, kind: int, name: str, generation: int, data: bytes) -> bytes:
    encoded = name.encode("utf-8", "surrogatepass")
    head = _RECORD.pack(_RECORD_MAGIC, salt, number, generation, kind, len(encoded), len(data), 0)[:-4]
    crc = zlib.crc32(data, zlib.crc32(encoded, zlib.crc32(head)))
    return b"".join((head, crc.to_bytes(4, "little"), encoded, data))


def _records(fd: int) -> Iterator[Record]:
    """The valid records of a journal, in order: up to the first torn, stale or misnumbered one."""
    header = _read_header(fd)
    if header is None:
        return
    salt, offset, number, size = header[0], _HEADER_BYTES, 1, os.fstat(fd).st_size
    while offset + _RECORD.size <= size:
        raw = os.pread(fd, _RECORD.size, offset)
        magic, got_salt, got_number, generation, kind, name_len, data_len, crc = _RECORD.unpack(raw)
        if magic != _RECORD_MAGIC or got_salt != salt or got_number != number or kind not in (PUT, DELETE,
                                                                                              CANCEL):
            return
        body = os.pread(fd, name_len + data_len, offset + _RECORD.size)
        if len(body) != name_len + data_len or zlib.crc32(body, zlib.crc32(raw[:-4])) != crc:
            return  # torn: never acknowledged
        yield Record(kind, body[:name_len].decode("utf-8", "surrogatepass"), generation, body[name_len:])
        offset += _RECORD.size + name_len + data_len
        number += 1


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Every valid record of the journal at ``path`` (for tests and inspection)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return list(_records(fd))
    finally:
        os.close(fd)


def _syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` (``os.sync`` where ``syncfs`` is missing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# -- one process's journal ---------------------------------------------------------------


class Journal(GroupCommit):
    """An open journal this process owns (its ``flock`` held): append, sync, checkpoint."""

    def __init__(self, path: str, fd: int, boot: str, anchor: int | None = None) -> None:
        """``anchor``: flush the records with ``storage.local_flush`` (None: ``fdatasync`` the journal)."""
        super().__init__()  # _synced: every record up to this number is on disk
        self.path, self.fd, self.boot, self.anchor = path, fd, boot, anchor
        self.pid = os.getpid()
        self._offset = _HEADER_BYTES
        self._salt = 0
        self._number = 0  # records written since the last checkpoint
        self._written = 0  # every record up to this number is in the file (page cache)
        self._inflight = 0  # records appended whose object is not yet published (or cancelled)
        self._checkpointing = False
        self._reset()
        self._allocated = os.fstat(fd).st_size  # its blocks allocated and durable (_reset's fdatasync)

    def _reset(self) -> None:
        """A new lap: a new salt makes every record in the file stale. Needs ``_cond`` (or sole use)."""
        salt = secrets.randbits(32)
        while salt == self._salt:
            salt = secrets.randbits(32)
        self._salt, self._offset, self._number, self._written, self._synced = salt, _HEADER_BYTES, 0, 0, 0
        os.pwrite(self.fd, _header(salt, self.boot), 0)
        os.fdatasync(self.fd)

    @contextlib.contextmanager
    def put(self, name: str, generation: int, data: bytes) -> Iterator[None]:
        """Inside the block the record of ``data`` at ``name`` is on disk: publish the object there.

        If the block raises, a cancel record follows (the object was not published)."""
        number = self._append(PUT, name, generation, data, inflight=True)
        published = False
        try:
            self._sync(number)
            yield
            published = True
        finally:
            with self._cond:
                self._inflight -= 1
                if not self._inflight:
                    self._cond.notify_all()
            if not published:  # on disk before the error is raised: the write must not come back
                with contextlib.suppress(OSError):
                    self._sync(self._append(CANCEL, name, generation, b""))

    def deleted(self, name: str, generation: int) -> None:
        """Note that ``name`` was deleted, so that recovery does not restore it: ``generation`` is the
        delete's own stamp, above every generation stamped for the name before it."""
        self._append(DELETE, name, generation, b"")

    def _append(self, kind: int, name: str, generation: int, data: bytes, *, inflight: bool = False) -> int:
        with self._cond:
            while self._checkpointing:
                self._cond.wait()
            record = _record(self._salt, self._number + 1, kind, name, generation, data)
            if self._offset + len(record) > max(CAPACITY, _HEADER_BYTES + len(record)):
                self._checkpoint()
                record = _record(self._salt, 1, kind, name, generation, data)
            end = self._offset + len(record)
            if end > self._allocated:
                self._grow(end)
            view = memoryview(record)
            offset = self._offset
            while view:
                done = os.pwrite(self.fd, view, offset)
                view, offset = view[done:], offset + done
            self._offset = end
            self._number += 1
            self._written = self._number
            if inflight:
                self._inflight += 1
            return self._number

    def _grow(self, end: int) -> None:
        """Write zeros up to past ``end`` (real blocks: reused later without a metadata flush)."""
        target = -(-end // _GROW) * _GROW
        zeros = bytes(_GROW)
        while self._allocated < target:
            step = min(_GROW, target - self._allocated)
            os.pwrite(self.fd, zeros[:step], self._allocated)
            self._allocated += step
        os.fdatasync(self.fd)  # the new blocks allocated on disk before a record is flushed in them

    def _checkpoint(self) -> None:
        """Make every object the journal published durable, then start a new lap. Needs ``_cond``."""
        self._checkpointing = True
        try:
            while self._inflight or self._syncing:
                self._cond.wait()
            _syncfs(self.fd)
            self._reset()
        finally:
            self._checkpointing = False
            self._cond.notify_all()

    def _sync(self, number: int) -> None:
        """Return once record ``number`` is on disk: one flush covers every record before it."""
        self._sync_to(number, lambda: self._written, self._flush)

    def _flush(self) -> None:
        if self.anchor is None:
            os.fdatasync(self.fd)
        else:  # the records' pages, then the device's cache; the journal's inode need not be written
            local_flush.write_out(self.fd)
            os.fdatasync(self.anchor)


# -- finding, adopting and recovering journals -----------------------------------------------


def acquire(folder: str, tmp: str, make_dirs: Callable[[str], None], file_mode: int) -> Journal:
    """A journal for this process under ``folder``: a free one adopted (checkpointed first if it holds
    records), else a new one (created in ``tmp``, locked, then moved in). It flushes through the anchor
    beside ``folder`` where there is one (``storage.local_flush``)."""
    boot = boot_id()
    assert boot is not None
    make_dirs(folder)
    anchor = local_flush.open_anchor(os.path.dirname(folder), make_dirs, file_mode)
    try:
        return _adopt(folder, boot, anchor) or _create(folder, tmp, boot, anchor, file_mode)
    except BaseException:
        if anchor is not None:
            os.close(anchor)
        raise


def _adopt(folder: str, boot: str, anchor: int | None) -> Journal | None:
    """A journal of this boot under ``folder`` that no process holds, now this one's (None: there is none)."""
    for path in _journal_paths(folder):
        fd = _lock(path, blocking=False)
        if fd is None:
            continue  # another process's, in use
        try:
            header = _read_header(fd)
            if header is None or header[1] != boot:
                os.close(fd)  # an earlier boot's: left to the recovery of the next open
                continue
            if next(_records(fd), None) is not None:
                _syncfs(fd)  # a killed writer's records: its objects are made durable before reuse
            return Journal(path, fd, boot, anchor)
        except BaseException:
            os.close(fd)
            raise
    return None


def _create(folder: str, tmp: str, boot: str, anchor: int | None, file_mode: int) -> Journal:
    path = f"{tmp}journal-{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        journal = Journal(path, fd, boot, anchor)
        final = f"{folder}/{secrets.token_hex(8)}{_SUFFIX}"
        os.rename(path, final)
        journal.path = final
        _fsync_dir(folder)
        return journal
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def recover(folder: str, restore: Callable[[Record], bool]) -> int:
    """After a reboot: restore what every journal of an earlier boot holds (see the module docstring).

    Called on every open of a bucket; costs one listing and a header read per journal when there is
    nothing to do. ``restore(record)`` publishes one object durably unless the bucket holds a newer one
    (True if it did). Returns how many objects were restored.
    """
    boot = boot_id()
    if boot is None or not os.path.isdir(folder):
        return 0
    if not any(_foreign(path, boot) for path in _journal_paths(folder)):
        return 0
    lock = _lock(f"{folder}/recovery.lock", blocking=True, create=True)
    assert lock is not None
    try:
        fds = []
        try:
            for path in _journal_paths(folder):
                fd = _lock_foreign(path, boot)
                if fd is not None:
                    fds.append(fd)
            return _recover_locked(folder, fds, boot, restore)
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        os.close(lock)


def _recover_locked(folder: str, fds: list[int], boot: str, restore: Callable[[Record], bool]) -> int:
    """Replay the journals ``fds`` (locked, of an earlier boot), newest record of each name winning,
    then reset each to this boot (empty)."""
    newest: dict[str, Record] = {}
    for fd in fds:
        header = _read_header(fd)
        if header is None or header[1] == boot:
            continue  # recovered meanwhile
        for record in _uncancelled(_records(fd)):
            seen = newest.get(record.name)
            if seen is None or record.generation > seen.generation or (
                    record.generation == seen.generation and record.kind == DELETE):
                newest[record.name] = record
    restored = 0
    for record in newest.values():
        if record.kind == PUT:
            try:
                restored += restore(record)
            except (OSError, ValueError) as exc:  # e.g. a name now under an object: reported, skipped
                _log.error("journal recovery could not restore %s: %s", record.name, exc)
    if restored:
        _log.warning("restored %d object(s) a power loss had lost or torn, from the journal in %s",
                     restored, folder)
    for fd in fds:
        header = _read_header(fd)
        if header is not None and header[1] != boot:
            os.pwrite(fd, _header(secrets.randbits(32), boot), 0)
            os.fdatasync(fd)
    return restored


def _uncancelled(records: Iterator[Record]) -> list[Record]:
    """One journal's PUT and DELETE records, less each PUT a later CANCEL of the same journal names (the
    PUT alone goes: an earlier, acknowledged PUT of the name stays a candidate)."""
    kept: dict[int, Record] = {}
    puts: dict[tuple[str, int], int] = {}
    for number, record in enumerate(records):
        if record.kind == CANCEL:
            cancelled = puts.pop((record.name, record.generation), None)
            if cancelled is not None:
                del kept[cancelled]
            continue
        kept[number] = record
        if record.kind == PUT:
            puts[record.name, record.generation] = number
    return list(kept.values())


def _journal_paths(folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [f"{folder}/{name}" for name in names if name.endswith(_SUFFIX)]


def _foreign(path: str, boot: str) -> bool:
    """Whether the journal at ``path`` was written in an earlier boot (unreadable: no)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        header = _read_header(fd)
    finally:
        os.close(fd)
    return header is not None and header[1] != boot


def _lock_foreign(path: str, boot: str) -> int | None:
    """Lock the journal at ``path`` while it is an earlier boot's (None once it is not: recovered)."""
    while True:
        fd = _lock(path, blocking=False)
        if fd is not None:
            return fd
        if not _foreign(path, boot):
            return None
        time.sleep(0.01)  # another process is recovering it


def _lock(path: str, *, blocking: bool, create: bool = False) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
