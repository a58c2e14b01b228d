"""``VerifiedSegments``: the runs of commits this machine has verified, remembered across processes.

A verdict covers the commits of one block (the ``SEGMENT_COMMITS`` commits a segment seals) from its
first commit to commit ``seq``: a whole sealed segment, or the commits after the last segment (a
log's tail, recorded by a reader that verified many of them at once). It depends only on their
bytes, which the SHA-256 of commit ``seq`` pins (each commit holds the hash of the one before it),
and on the root key the keyring is trusted through (keys are never revoked: a rotated key still
verifies its old commits). So a verdict, once reached, holds for good. It is kept by (partition
prefix, seq, SHA-256 of commit ``seq``) in one file per root key under the process's home,
``$TUNE_HOME/cache/verified/<root key id>.jsonl`` (0600, as private as the signing keys beside it:
whoever can write it can take those too), and a process that meets those commits again, cold,
checks none of their signatures (an Ed25519 verify costs more than replaying the commit). A writer
records each segment it seals (every commit of it was verified when read, or signed by the writer
itself); a reader, each segment it verified, and the tail it verified.

A sealed segment's verdict also keeps the SHA-256 of the segment object whose commits were checked
(``segment_sha``): a reader that finds the same object again needs neither to hash each of its
commits to follow their links nor to check a signature; hashing the compressed object (a fifth of
the commits' bytes) proves that its commits are the ones verified.

The file is append-only, one JSON line per verdict (``[prefix, seq, sha, first signed]``, and the
segment's SHA-256 as a fifth item where known: a release that reads four items skips such a line,
which costs it one verification), each written whole with ``O_APPEND`` (several processes may
append at once); a later line for the same commit replaces an earlier one. Past ``MAX_ENTRIES``
lines it is rewritten with the newer half. A line that does not parse is skipped, and a home that
cannot be written keeps verdicts in memory only (warned once): it is a cache, and a lost verdict
costs one verification again, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

import msgspec

from storage.local import FILE_MODE, make_private_dirs

__all__ = ["MAX_ENTRIES", "UNKNOWN", "VerifiedSegments", "forget_verified", "verified_segments"]

MAX_ENTRIES = 65_536
"""Segments remembered per root key (a line of about 150 bytes each): 16.7 million commits."""

UNKNOWN: Final = -1
"""``VerifiedSegments.get`` for a segment not verified yet."""

_log = logging.getLogger(__name__)
_Key = tuple[str, int, str]
_Entry = tuple[int | None, str | None]  # (first signed seq, SHA-256 of the segment object)


class VerifiedSegments:
    """Commits verified under one root key: ``(prefix, seq, sha)`` -> the first signed seq from the start
    of commit ``seq``'s block to it (None: none signed) and the SHA-256 of the segment object verified
    (a sealed segment's), in memory and, when ``path`` is given, in that file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, _Entry] | None = None  # read from the file when first asked
        self._lines = 0

    def get(self, prefix: str, seq: int, sha: str) -> int | None:
        """The first signed seq of the verified commits of the block ending at commit ``seq`` (hash
        ``sha``), None if none of them is signed, ``UNKNOWN`` if they were never verified here."""
        with self._lock:
            entry = self._loaded().get((prefix, seq, sha))
        return UNKNOWN if entry is None else entry[0]

    def get_segment(self, prefix: str, seq: int, sha: str, segment_sha: str) -> int | None:
        """``get``, for the segment object of SHA-256 ``segment_sha`` ending at commit ``seq``: ``UNKNOWN``
        unless those very bytes were verified here."""
        with self._lock:
            entry = self._loaded().get((prefix, seq, sha))
        return UNKNOWN if entry is None or entry[1] != segment_sha else entry[0]

    def add(self, prefix: str, seq: int, sha: str, first_signed: int | None,
            segment_sha: str | None = None) -> None:
        """Remember that the commits of the block ending at commit ``seq`` (hash ``sha``) verified, from
        the segment object of SHA-256 ``segment_sha`` when given."""
        key = (prefix, seq, sha)
        with self._lock:
            entries = self._loaded()
            known = entries.get(key)
            if known is not None and (segment_sha is None or known[1] == segment_sha):
                return
            entries[key] = (first_signed, segment_sha)
            while len(entries) > MAX_ENTRIES:
                entries.popitem(last=False)
            if self.path is not None:
                line = [prefix, seq, sha, first_signed] + ([segment_sha] if segment_sha else [])
                self._append(msgspec.json.encode(line) + b"\n")

    def forget(self) -> None:
        """Drop what is in memory: the next question reads the file again (as a fresh process would)."""
        with self._lock:
            self._entries = None

    def _loaded(self) -> OrderedDict[_Key, _Entry]:
        if self._entries is None:
            self._entries, self._lines = OrderedDict(), 0
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    for line in self.path.read_bytes().splitlines():
                        self._lines += 1
                        with contextlib.suppress(ValueError, TypeError):
                            prefix, seq, sha, first, *rest = msgspec.json.decode(line)
                            segment_sha = rest[0] if len(rest) == 1 and isinstance(rest[0], str) else None
                            if isinstance(first, int | None) and len(rest) <= 1:
                                self._entries[(str(prefix), int(seq), str(sha))] = (first, segment_sha)
        return self._entries

    def _append(self, line: bytes) -> None:
        assert self.path is not None and self._entries is not None
        try:
            if self._lines >= MAX_ENTRIES:
                self._rewrite()
            make_private_dirs(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._lines += 1
        except OSError as exc:
            _log.warning("cannot keep verified segments in %s (%s): keeping them in memory only",
                         self.path, exc)
            self.path = None

    def _rewrite(self) -> None:
        """Keep the newer half of the entries in memory, in a file put in place of the old one."""
        assert self.path is not None and self._entries is not None
        keep = list(self._entries.items())[len(self._entries) // 2:]
        self._entries = OrderedDict(keep)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, b"".join(msgspec.json.encode([*key, first] + ([segment] if segment else [])) + b"\n"
                                  for key, (first, segment) in keep))
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._lines = len(keep)


_caches: dict[tuple[Path | None, str], VerifiedSegments] = {}
_caches_lock = threading.Lock()


def verified_segments(home: Path | None, root_key_id: str) -> VerifiedSegments:
    """This process's verdicts for segments verified under root key ``root_key_id``, kept under
    ``home`` (None: in memory only)."""
    path = home / "cache" / "verified" / f"{root_key_id}.jsonl" if home is not None else None
    with _caches_lock:
        cache = _caches.get((path, root_key_id))
        if cache is None:
            cache = _caches[(path, root_key_id)] = VerifiedSegments(path)
        return cache


def forget_verified() -> None:
    """Drop every verdict held in memory, so the next ones are read from the files as a fresh process
    reads them (benches and tests that stand for a new process)."""
    with _caches_lock:
        caches = list(_caches.values())
    for cache in caches:
        cache.forget()


def _forget_after_fork() -> None:
    global _caches_lock
    _caches.clear()
    _caches_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
