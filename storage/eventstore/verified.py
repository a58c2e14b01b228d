"""``VerifiedSegments``: the sealed segments this machine has verified, remembered across processes.

A segment's verdict depends only on its bytes, which the SHA-256 of its last commit pins (each
commit holds the hash of the one before it), and on the root key the keyring is trusted through
(keys are never revoked: a rotated key still verifies its old commits). So a verdict, once reached,
holds for good. It is kept by (partition prefix, last seq, SHA-256 of the last commit) in one file
per root key under the process's home, ``$TUNE_HOME/cache/verified/<root key id>.jsonl`` (0600, as
private as the signing keys beside it: whoever can write it can take those too), and a process
that meets the segment again, cold, checks none of its 256 signatures (an Ed25519 verify costs
more than replaying the commit). A writer records each segment it seals (every commit of it was
verified when read, or signed by the writer itself); a reader, each segment it verified.

The file is append-only, one JSON line per segment, each written whole with ``O_APPEND`` (several
processes may append at once). Past ``MAX_ENTRIES`` lines it is rewritten with the newer half. A
line that does not parse is skipped, and a home that cannot be written keeps verdicts in memory only
(warned once): it is a cache, and a lost verdict costs one verification again, nothing else.
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


class VerifiedSegments:
    """Segments verified under one root key: ``(prefix, last seq, last sha)`` -> the first signed seq
    in the segment (None: none signed), in memory and, when ``path`` is given, in that file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, int | None] | None = None  # read from the file when first asked
        self._lines = 0

    def get(self, prefix: str, seq: int, sha: str) -> int | None:
        """The first signed seq of the verified segment ending at commit ``seq`` (hash ``sha``), None if
        none of it is signed, ``UNKNOWN`` if it was never verified here."""
        with self._lock:
            return self._loaded().get((prefix, seq, sha), UNKNOWN)

    def add(self, prefix: str, seq: int, sha: str, first_signed: int | None) -> None:
        """Remember that the segment ending at commit ``seq`` (hash ``sha``) verified."""
        key = (prefix, seq, sha)
        with self._lock:
            entries = self._loaded()
            if key in entries:
                return
            entries[key] = first_signed
            while len(entries) > MAX_ENTRIES:
                entries.popitem(last=False)
            if self.path is not None:
                self._append(msgspec.json.encode([prefix, seq, sha, first_signed]) + b"\n")

    def forget(self) -> None:
        """Drop what is in memory: the next question reads the file again (as a fresh process would)."""
        with self._lock:
            self._entries = None

    def _loaded(self) -> OrderedDict[_Key, int | None]:
        if self._entries is None:
            self._entries, self._lines = OrderedDict(), 0
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    for line in self.path.read_bytes().splitlines():
                        self._lines += 1
                        with contextlib.suppress(ValueError, TypeError):
                            prefix, seq, sha, first = msgspec.json.decode(line)
                            if isinstance(first, int | None):
                                self._entries[(str(prefix), int(seq), str(sha))] = first
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
            os.write(fd, b"".join(msgspec.json.encode([*key, first]) + b"\n" for key, first in keep))
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
