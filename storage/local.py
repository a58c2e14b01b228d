"""``LocalBucket``: a folder that behaves like a GCS bucket.

Object ``a/b.json`` is the plain file ``<root>/a/b.json``, so the folder stays
browsable. The bucket's own state lives in ``<root>/.bucket/`` (``tmp/`` for
writes in progress, ``locks/`` for 256 lock stripes, ``exclusive/`` for the locks
``exclusive`` holds); object names may not start with ``.bucket/`` and ``list()``
never shows it.

How each promise is kept:

* Atomic, never half-read: every write fills a private temp file, then renames
  it (or, create-only, hard-links it) over the name, so a reader opens either
  the old inode or the new one, whole.
* Generations: the file's ``st_mtime_ns``, stamped on the temp file before it
  is published, as ``max(now_ns, current + 1)``. They therefore survive
  restarts and are read by the same ``fstat`` that pins the bytes. An edit
  made outside the bucket also changes the generation. Only a wall clock set
  backwards across a delete can make a re-created name reuse an old value.
* Races across processes: each write publishes while holding ``flock`` on the
  name's lock stripe, so the precondition check, the new generation and the
  rename are one step; create-only also uses ``os.link``, which fails if the
  name exists.
* Durable by default: a write returns only once the object is on disk. The
  temp file is fsynced before it is published (so a name, once visible, never
  holds an empty or partial file, even after a power loss: a commit of the event
  log is either whole or absent), then the folder is fsynced after the rename or
  link (so the name itself survives). Group commit: writers in several threads of
  one bucket object that publish into one folder at once share that folder's fsync
  (one fsync covers every name placed before it began). ``fsync=False``
  (``file:///path?fsync=0``) skips both, for tests and benches that say so: a
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
import os
import secrets
import stat as stat_mode
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

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

__all__ = ["DIR_MODE", "FILE_MODE", "LocalBucket", "make_private_dirs"]

_STATE = ".bucket"
_STRIPES = 256
_CHUNK = 1 << 20
_STALE_TMP_S = 24 * 3600
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
DIR_MODE = 0o700
FILE_MODE = 0o600


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
        make_private_dirs(self._tmp)
        make_private_dirs(locks)
        self._exclusive = f"{self.root}/{_STATE}/exclusive/"
        make_private_dirs(self._exclusive)
        self._sweep_tmp()

    def __repr__(self) -> str:
        return f"LocalBucket({str(self.root)!r})"

    # -- reading ---------------------------------------------------------

    def read(self, name: str) -> bytes:
        return self.read_with_stat(name)[0]

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
            return self._publish(name, path, fd, tmp, len(data), hashlib.md5(data).hexdigest(),
                                 if_generation_match)
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
        with self._locked(name):
            if not os.path.isfile(path):
                raise ObjectNotFound(name)
            os.unlink(path)
        self._prune(os.path.dirname(path))

    def _publish(self, name: str, path: str, fd: int, tmp: str, size: int, md5_hex: str,
                 if_generation_match: int | None) -> ObjectStat:
        """Under the name's lock: check the precondition, stamp a generation, put tmp at path.

        A create-only write to a name already taken fails before its fsync: writers racing for the
        next commit of a log would otherwise each pay a wasted fsync per lost race."""
        if self.fsync:
            if if_generation_match == 0 and os.path.lexists(path):
                raise AlreadyExists(name)
            os.fsync(fd)
            folder = self._folder_sync(os.path.dirname(path))  # held until synced: one per busy folder
        with self._locked(name):
            current = self._current_generation(name, path)
            if if_generation_match == 0 and current is not None:
                raise AlreadyExists(name)
            if if_generation_match not in (None, 0) and current != if_generation_match:
                raise PreconditionFailed(f"{name}: generation is {current}, not {if_generation_match}")
            generation = _stamp(fd, current or 0)
            self._place(name, path, tmp, create_only=if_generation_match == 0)
        if self.fsync:
            folder.sync(folder.placed())
        return ObjectStat(name, generation, size, md5_hex)

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
        tmp = f"{self._tmp}{os.getpid()}-{secrets.token_hex(8)}"
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE), tmp

    @staticmethod
    def _discard(fd: int, tmp: str) -> None:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold the name's lock stripe: a fresh open file per call, so threads exclude each other too."""
        stripe = self._stripes[zlib.crc32(name.encode("utf-8", "surrogatepass")) % _STRIPES]
        fd = os.open(stripe, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
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


def _stamp(fd: int, floor: int) -> int:
    """Set the file's mtime to a generation above ``floor``; return what the filesystem kept."""
    wanted = max(time.time_ns(), floor + 1)
    for resolution in (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000):
        wanted = -(-wanted // resolution) * resolution  # round up to what the filesystem can hold
        os.utime(fd, ns=(wanted, wanted))
        kept = os.fstat(fd).st_mtime_ns
        if kept > floor:
            return kept
        wanted = floor + resolution
    raise BucketError(f"cannot stamp a generation above {floor}: filesystem timestamps too coarse")


def _parent_is_object(name: str) -> BucketError:
    return BucketError(f"{name}: a parent of this name is an object in a local bucket")


class _FolderSync:
    """Group commit for one folder: an fsync covers every name placed in it before the fsync began.

    A writer takes a ticket (``placed``) once its name is in the folder, then ``sync``s to it: if no
    fsync runs, it starts one covering every ticket given so far; if one runs, it waits, and returns
    once a finished fsync covered its ticket (else starts the next one). N writers arriving together
    cost two fsyncs, not N.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._cond = threading.Condition()
        self._placed = 0  # tickets given
        self._synced = 0  # every ticket up to this one is on disk
        self._syncing = False

    def placed(self) -> int:
        with self._cond:
            self._placed += 1
            return self._placed

    def sync(self, ticket: int) -> None:
        with self._cond:
            while self._synced < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, covered, done = True, self._placed, False
                self._cond.release()
                try:
                    _fsync_dir(self.folder)
                    done = True
                finally:  # a failed fsync covers nothing: the next writer tries again
                    self._cond.acquire()
                    self._syncing = False
                    if done:
                        self._synced = max(self._synced, covered)
                    self._cond.notify_all()


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
