"""``LocalBucket``: a folder that behaves like a GCS bucket.

Object ``a/b.json`` is the plain file ``<root>/a/b.json``, so the folder stays
browsable. The bucket's own state lives in ``<root>/.bucket/`` (``tmp/`` for
writes in progress, ``locks/`` for 256 lock stripes, ``journal/`` for the
writers' write-ahead journals, ``exclusive/`` for the locks ``exclusive`` holds);
object names may not start with ``.bucket/`` and ``list()`` never shows it.

How each promise is kept:

* Atomic, never half-read: every write fills a private temp file, then renames
  it (or, create-only, hard-links it) over the name, so a reader opens either
  the old inode or the new one, whole.
* Generations: the file's ``st_mtime_ns``, stamped on the temp file before it
  is published, as ``max(now_ns, current + 1, last + 1)``, where ``last`` is the
  last generation stamped under the name's lock stripe (kept in the stripe's
  lock file, in the page cache). They therefore survive restarts and are read
  by the same ``fstat`` that pins the bytes, and for one name they rise in the
  order writers took its lock, even where the clock stepped back or a writer
  was killed before placing its object (the journal's recovery relies on it).
  An edit made outside the bucket also changes the generation. Only a wall
  clock set backwards across a reboot and a delete can make a re-created name
  reuse an old value.
* Races across processes: each write publishes while holding ``flock`` on the
  name's lock stripe, so the precondition check, the new generation and the
  rename are one step; create-only also uses ``os.link``, which fails if the
  name exists.
* Durable by default: a write returns only once it survives a power loss. On
  Linux a ``write`` goes through this process's write-ahead journal under
  ``.bucket/journal/`` (``storage.local_journal``): its record (name, generation,
  bytes; CRC-framed) is appended to a reused, preallocated file and ``fdatasync``ed
  (one flush, shared by the threads writing at once), and only then is the name
  placed, without any fsync; after a reboot the first open restores, from the
  journals, every object a power loss lost or tore before anything reads it, and a
  torn (never acknowledged) record is ignored. The module's docstring holds the
  whole argument. ``upload`` and writes above ``local_journal.MAX_RECORD_BYTES``
  (and every write where there is no ``fdatasync`` or boot id) take the plain path:
  the temp file is fsynced before it is published (so a name, once visible, never
  holds an empty or partial file), then the folder after the rename or link (so
  the name itself survives); threads publishing into one folder at once share that
  folder's fsync. Either way a commit of the event log is whole or absent after a
  power loss, and a visible object is already durable. ``fsync=False``
  (``file:///path?fsync=0``) skips all of it, for tests and benches that say so: a
  crash of the process still never leaves a partial object, but a power loss may
  lose acknowledged writes, or (on some filesystems) leave a published name empty
  (an empty last commit of an event log is read as absent and replaced by the next
  append: see ``storage.eventstore.log``).

* Private: the bucket holds password hashes, datasets and weights, so every folder it
  creates is 0700 and every object, lock and temp file 0600 (the process umask can only
  narrow that). Files an older release left 0644 are read as before; a rewrite replaces
  them with 0600 ones. ``make_private_dirs`` is also how the server's home is made.

A name cannot be both an object and a folder here (``a`` and ``a/b``): GCS
allows it, the seed layout never does it, and such a write raises BucketError.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
import stat as stat_mode
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage import local_journal
from storage.bucket import (
    AlreadyExists,
    Bucket,
    BucketError,
    ObjectNotFound,
    ObjectStat,
    PreconditionFailed,
    check_name,
    check_prefix,
)
from storage.group_commit import GroupCommit

__all__ = ["DIR_MODE", "FILE_MODE", "LocalBucket", "make_private_dirs"]

_STATE = ".bucket"
_STRIPES = 256
_CHUNK = 1 << 20
_STALE_TMP_S = 24 * 3600
_STAMP = struct.Struct("<Q")  # a lock stripe's content: the last generation stamped under it
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
DIR_MODE = 0o700
FILE_MODE = 0o600
_JOURNALS: dict[str, local_journal.Journal] = {}  # root -> this process's journal there
_JOURNALS_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


class _Process:
    """This process's id and temp-name prefix, kept (not asked of the kernel per write) and renewed in a
    forked child."""

    pid = os.getpid()
    tmp_prefix = f"{pid}-{secrets.token_hex(4)}-"
    tmp_numbers = itertools.count()

    @classmethod
    def renew(cls) -> None:
        cls.pid = os.getpid()
        cls.tmp_prefix = f"{cls.pid}-{secrets.token_hex(4)}-"
        cls.tmp_numbers = itertools.count()


os.register_at_fork(after_in_child=_Process.renew)


def make_private_dirs(path: str | os.PathLike[str]) -> None:
    """``os.makedirs(path, exist_ok=True)``, but every level it creates is 0700.

    (``os.makedirs`` applies its ``mode`` to the last level only; the others get 0777 less the umask.)
    Existing folders are left as they are.
    """
    path = os.fspath(path)
    missing: list[str] = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


class LocalBucket(Bucket):
    """A bucket in a local folder, safe for many processes at once."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self.fsync = fsync
        self._folders: weakref.WeakValueDictionary[str, _FolderSync] = weakref.WeakValueDictionary()
        self._folders_lock = threading.Lock()
        self.url = self.root.as_uri() if fsync else f"{self.root.as_uri()}?fsync=0"  # opens a like bucket
        self._base = f"{self.root}/"  # internals use str paths: pathlib costs a quarter of a small write
        self._tmp = f"{self.root}/{_STATE}/tmp/"
        locks = f"{self.root}/{_STATE}/locks"
        self._stripes = [f"{locks}/{i:02x}" for i in range(_STRIPES)]
        self._journals = f"{self.root}/{_STATE}/{local_journal.JOURNAL_DIR}"
        self.journaled = fsync and local_journal.available()
        self._nanoseconds = False  # whether the folder's filesystem keeps mtimes to the nanosecond (_stamp)
        make_private_dirs(self._tmp)
        make_private_dirs(locks)
        self._exclusive = f"{self.root}/{_STATE}/exclusive/"
        make_private_dirs(self._exclusive)
        self._sweep_tmp()
        local_journal.recover(self._journals, self._restore)  # after a reboot, before anything is read

    def __repr__(self) -> str:
        return f"LocalBucket({str(self.root)!r})"

    # -- reading ---------------------------------------------------------

    def read(self, name: str) -> bytes:
        with self.open_read(name) as f:
            return f.read()

    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        with self.open_read(name) as f:
            info = os.fstat(f.fileno())
            data = f.read()
        return data, ObjectStat(name, info.st_mtime_ns, len(data), hashlib.md5(data).hexdigest())

    def open_read(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except _MISSING as exc:
            raise ObjectNotFound(name) from exc

    def stat(self, name: str) -> ObjectStat:
        with self.open_read(name) as f:
            info = os.fstat(f.fileno())
            digest = hashlib.file_digest(f, "md5").hexdigest()
        return ObjectStat(name, info.st_mtime_ns, info.st_size, digest)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        folder = check_prefix(prefix).rpartition("/")[0]
        start = self._base + folder if folder else str(self.root)
        return self._walk(start, f"{folder}/" if folder else "", prefix, start_offset or "")

    def _walk(self, folder: str, base: str, prefix: str, start: str) -> Iterator[str]:
        """Depth-first, each folder sorted as if its name ended in '/': global name order."""
        try:
            with os.scandir(folder) as it:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        for key, entry in sorted(entries, key=lambda pair: pair[0]):
            full = base + key
            if full == f"{_STATE}/" or "\\" in key:
                continue
            if key.endswith("/"):
                if (full.startswith(prefix) or prefix.startswith(full)) and (
                    full >= start or start.startswith(full)
                ):
                    yield from self._walk(entry.path, full, prefix, start)
            elif full.startswith(prefix) and full >= start and entry.is_file(follow_symlinks=False):
                yield full

    # -- writing ---------------------------------------------------------

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        path = self._path(name)
        fd, tmp = self._open_tmp()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return self._publish(name, path, fd, tmp, len(data), None, if_generation_match, journal=data)
        finally:
            self._discard(fd, tmp)

    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        path = self._path(name)
        chunks: Iterable[bytes] = (
            iter(lambda: stream.read(_CHUNK), b"") if hasattr(stream, "read") else stream  # type: ignore[union-attr]
        )
        fd, tmp = self._open_tmp()
        try:
            digest, size = hashlib.md5(), 0
            with os.fdopen(os.dup(fd), "wb", buffering=_CHUNK) as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            return self._publish(name, path, fd, tmp, size, digest.hexdigest(), None)
        finally:
            self._discard(fd, tmp)

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._locked(name) as lock:
            try:
                info = os.stat(path)
            except _MISSING as exc:
                raise ObjectNotFound(name) from exc
            if not stat_mode.S_ISREG(info.st_mode):
                raise ObjectNotFound(name)
            os.unlink(path)
            if self.journaled:  # else a reboot's recovery could restore it from an earlier record
                stamp = max(time.time_ns(), info.st_mtime_ns + 1, _last_stamp(lock) + 1)
                _note_stamp(lock, stamp)  # newer than any write begun before it, even a killed one's
                self._journal().deleted(name, stamp)
        self._prune(os.path.dirname(path))

    def _publish(self, name: str, path: str, fd: int, tmp: str, size: int, md5_hex: str | None,
                 if_generation_match: int | None, journal: bytes | None = None) -> ObjectStat:
        """Under the name's lock: check the precondition, stamp a generation, put tmp at path.

        Durable, journaled (``journal``: the bytes, small enough): the journal's record of the write is
        on disk before the name is placed (``storage.local_journal``). Durable, not journaled: tmp is
        fsynced before, its folder after. A create-only write to a name already taken fails before any
        flush: writers racing for the next commit of a log would otherwise each pay a wasted one per
        lost race."""
        journaled = self.journaled and journal is not None and len(journal) <= local_journal.MAX_RECORD_BYTES
        synced = self.fsync and not journaled
        if synced and if_generation_match == 0 and os.path.lexists(path):  # (journaled: nothing is flushed
            raise AlreadyExists(name)  # before the check under the lock)
        if synced:
            os.fsync(fd)
            folder = self._folder_sync(os.path.dirname(path))  # held until synced: one per busy folder
        with self._locked(name) as lock:
            current = self._current_generation(name, path)
            if if_generation_match == 0 and current is not None:
                raise AlreadyExists(name)
            if if_generation_match not in (None, 0) and current != if_generation_match:
                raise PreconditionFailed(f"{name}: generation is {current}, not {if_generation_match}")
            generation, self._nanoseconds = _stamp(fd, max(current or 0, _last_stamp(lock)),
                                                   nanoseconds=self._nanoseconds)
            _note_stamp(lock, generation)  # before the record: a writer killed after it is still ordered
            if journaled:
                assert journal is not None
                with self._journal().put(name, generation, journal):
                    self._place(name, path, tmp, create_only=if_generation_match == 0)
            else:
                self._place(name, path, tmp, create_only=if_generation_match == 0)
        if synced:
            folder.sync(folder.placed())
        return ObjectStat(name, generation, size, md5_hex)

    def _journal(self) -> local_journal.Journal:
        """This process's journal for this folder (shared by every bucket object on it)."""
        key = str(self.root)
        journal = _JOURNALS.get(key)
        if journal is None or journal.pid != _Process.pid:
            with _JOURNALS_LOCK:
                journal = _JOURNALS.get(key)
                if journal is None or journal.pid != _Process.pid:  # none yet, or the parent's (forked)
                    journal = _JOURNALS[key] = local_journal.acquire(
                        self._journals, self._tmp, make_private_dirs, FILE_MODE)
        return journal

    def _restore(self, record: local_journal.Record) -> bool:
        """Recovery after a reboot: publish ``record`` durably at its generation, unless the name holds a
        newer generation or these very bytes. True if restored."""
        path = self._path(record.name)
        with self._locked(record.name):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                pass
            else:
                if not stat_mode.S_ISREG(info.st_mode) or info.st_mtime_ns > record.generation:
                    return False
                with open(path, "rb") as f:
                    if f.read() == record.data:
                        return False
            fd, tmp = self._open_tmp()
            try:
                view = memoryview(record.data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                os.utime(fd, ns=(record.generation, record.generation))
                try:
                    self._place(record.name, path, tmp, create_only=False)
                except BucketError as exc:  # a parent of the name is now an object: nothing to restore into
                    _log.error("%s not restored from the journal: %s", record.name, exc)
                    return False
            finally:
                self._discard(fd, tmp)
            _fsync_dir(os.path.dirname(path))
        _log.warning("%s restored from the journal (lost or torn by a power loss)", record.name)
        return True

    def _folder_sync(self, folder: str) -> _FolderSync:
        with self._folders_lock:
            sync = self._folders.get(folder)
            if sync is None:
                sync = self._folders[folder] = _FolderSync(folder)
            return sync

    def _current_generation(self, name: str, path: str) -> int | None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            raise _parent_is_object(name) from exc
        if not stat_mode.S_ISREG(info.st_mode):
            raise BucketError(f"{name}: is a folder of other objects in a local bucket")
        return info.st_mtime_ns

    def _place(self, name: str, path: str, tmp: str, *, create_only: bool) -> None:
        for attempt in range(3):  # a concurrent delete may prune the folder between makedirs and link
            try:
                if create_only:
                    os.link(tmp, path)
                else:
                    os.rename(tmp, path)
                return
            except FileExistsError as exc:
                raise AlreadyExists(name) from exc
            except FileNotFoundError:
                if attempt == 2:
                    raise
                try:
                    make_private_dirs(os.path.dirname(path))
                except (FileExistsError, NotADirectoryError) as exc:
                    raise _parent_is_object(name) from exc

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Hold ``key``'s lock (``flock`` on ``.bucket/exclusive/<sha256 of key>``, a fresh open file per
        call so threads exclude each other too) across every process on this folder; yields True."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        fd = os.open(f"{self._exclusive}{digest}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)  # releases the flock

    # -- internals -------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(name)
        if name == _STATE or name.startswith(f"{_STATE}/"):
            raise ValueError(f"object names may not start with {_STATE!r} in a local bucket: {name!r}")
        return self._base + name

    def _open_tmp(self) -> tuple[int, str]:
        """A new temp file: named by this process's prefix (its pid and a random part) and a number."""
        while True:
            tmp = f"{self._tmp}{_Process.tmp_prefix}{next(_Process.tmp_numbers)}"
            try:
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE), tmp
            except FileExistsError:  # a dead process's of the same pid and prefix: take the next number
                continue

    @staticmethod
    def _discard(fd: int, tmp: str) -> None:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[int]:
        """Hold the name's lock stripe: a fresh open file per call, so threads exclude each other too.

        Yields the stripe's descriptor: the file holds the last generation stamped under it
        (``_last_stamp``)."""
        stripe = self._stripes[zlib.crc32(name.encode("utf-8", "surrogatepass")) % _STRIPES]
        fd = os.open(stripe, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def _prune(self, folder: str) -> None:
        """Remove now-empty folders up to the root (GCS has no folders to leave behind)."""
        while folder.startswith(self._base):
            try:
                os.rmdir(folder)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            folder = os.path.dirname(folder)

    def _sweep_tmp(self) -> None:
        """Delete temp files that writers which crashed a day ago left behind."""
        cutoff = time.time() - _STALE_TMP_S
        with os.scandir(self._tmp) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)


def _stamp(fd: int, floor: int, *, nanoseconds: bool = False) -> tuple[int, bool]:
    """Set the file's mtime to a generation above ``floor``; return what the filesystem kept, and whether
    that shows the filesystem keeps nanoseconds (an odd number kept as set). ``nanoseconds``: it was shown
    before, so the time set is the time kept, not read back."""
    wanted = max(time.time_ns(), floor + 1)
    if nanoseconds:
        os.utime(fd, ns=(wanted, wanted))
        return wanted, True
    for resolution in (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000):
        wanted = -(-wanted // resolution) * resolution  # round up to what the filesystem can hold
        os.utime(fd, ns=(wanted, wanted))
        kept = os.fstat(fd).st_mtime_ns
        if kept > floor:
            return kept, kept == wanted and wanted % 2 == 1
        wanted = floor + resolution
    raise BucketError(f"cannot stamp a generation above {floor}: filesystem timestamps too coarse")


def _last_stamp(lock: int) -> int:
    """The last generation stamped under this lock stripe (0 if none: an older release's empty file)."""
    raw = os.pread(lock, _STAMP.size, 0)
    return _STAMP.unpack(raw)[0] if len(raw) == _STAMP.size else 0


def _note_stamp(lock: int, generation: int) -> None:
    """Record ``generation`` as the stripe's last stamp (page cache only: a reboot's recovery comes first,
    and after it only the objects' own generations need ordering)."""
    os.pwrite(lock, _STAMP.pack(generation), 0)


def _parent_is_object(name: str) -> BucketError:
    return BucketError(f"{name}: a parent of this name is an object in a local bucket")


class _FolderSync(GroupCommit):
    """Group commit for one folder: an fsync covers every name placed in it before the fsync began.

    A writer takes a ticket (``placed``) once its name is in the folder, then ``sync``s to it.
    """

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder
        self._placed = 0  # tickets given

    def placed(self) -> int:
        with self._cond:
            self._placed += 1
            return self._placed

    def sync(self, ticket: int) -> None:
        self._sync_to(ticket, lambda: self._placed, lambda: _fsync_dir(self.folder))


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
