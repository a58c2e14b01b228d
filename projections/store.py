"""``ViewStore``: how the API reads views, cached, without ever replaying.

An in-process projector feeds every view it writes (``put``), so embedded reads
cost no I/O. Any other entry is checked by generation (one ``stat``) and read
again only when the object changed. A process that leaves the folding of other
processes' commits to the projector role (``tune run api``) ``release``s a partition
when its change feed tells of a commit there: the views this process fed of it are
checked by generation again from then on, and its views remembered as missing are
looked for again. A view found missing is remembered as
missing for ``ABSENT_TTL_S`` (a poll of a view not written yet, such as the
billing of a user with no usage, costs no I/O) unless its projector writes it
first. The decoded dict is shared between
readers: treat it as read-only. Dollar amounts decode as floats, which print
back exactly as stored; exact arithmetic uses the ``*_usd_micros`` integers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec

from projections.render import decode
from storage import layout
from storage.bucket import Bucket, ObjectNotFound

__all__ = ["ABSENT_TTL_S", "ViewStore"]

ABSENT_TTL_S = 1.0


class _Position(msgspec.Struct):
    position: int = -1


_POSITION = msgspec.json.Decoder(_Position)


def stored_position(data: bytes) -> int:
    """The ``position`` recorded in a view's bytes; -1 if it has none or is not a JSON object."""
    try:
        return _POSITION.decode(data).position
    except msgspec.DecodeError:
        return -1


class _Entry:
    __slots__ = ("data", "fed", "generation", "parsed", "position", "typed")

    fed: bool

    def __init__(self, data: bytes, generation: int, position: int, *, fed: bool) -> None:
        self.data = data
        self.generation = generation
        self.position = position
        self.fed = fed
        self.parsed: Any = None
        self.typed: dict[Any, Any] = {}


class ViewStore:
    """Cached reads of views by object name."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self._entries: dict[str, _Entry] = {}
        self._absent: dict[str, float] = {}  # name -> until when (monotonic) it is known to be missing
        self._fed_by: dict[str, set[str]] = {}  # partition -> names it fed (trusted) here
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes, generation: int, position: int, *, partition: str = "") -> None:
        """Record a view its in-process projector has just written from ``partition`` (trusted until
        ``forget``, or ``release`` of that partition)."""
        with self._lock:
            self._entries[name] = _Entry(data, generation, position, fed=True)
            self._absent.pop(name, None)
            self._fed_by.setdefault(partition, set()).add(name)

    def release(self, partition: str) -> None:
        """Another process committed to ``partition``: stop trusting the views fed from it (each is
        checked by generation on its next read, as a view read from the bucket is), and forget which
        of its views were missing (every remembered miss, for the platform's partition: it writes
        views in the users' folders too)."""
        with self._lock:
            for name in self._fed_by.pop(partition, ()):
                entry = self._entries.get(name)
                if entry is not None:
                    entry.fed = False
            if partition == layout.PLATFORM:
                self._absent.clear()
            else:
                folder = f"{partition}/"
                for name in [n for n in self._absent if n.startswith(folder)]:
                    del self._absent[name]

    def forget(self, name: str) -> None:
        """Drop a cached view, e.g. when another process wrote a newer one."""
        with self._lock:
            self._entries.pop(name, None)
            self._absent.pop(name, None)

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is not None:
            if entry.fed:
                return entry
            try:
                if self.bucket.stat(name).generation == entry.generation:
                    return entry
            except ObjectNotFound:
                self.forget(name)
                raise
        until = self._absent.get(name)
        if until is not None and time.monotonic() < until:
            raise ObjectNotFound(name)
        try:
            data, stat = self.bucket.read_with_stat(name)
        except ObjectNotFound:
            with self._lock:
                if name not in self._entries:
                    self._absent[name] = time.monotonic() + ABSENT_TTL_S
            raise
        entry = _Entry(data, stat.generation, stored_position(data), fed=False)
        with self._lock:
            current = self._entries.get(name)
            if current is None or not current.fed or current.position < entry.position:
                self._entries[name] = entry
        return entry

    def read_raw(self, name: str) -> tuple[bytes, int]:
        """The view's bytes and position; raise ObjectNotFound."""
        entry = self._entry(name)
        return entry.data, entry.position

    def read_json(self, name: str) -> tuple[dict[str, Any], int]:
        """The view decoded (shared, read-only) and its position; raise ObjectNotFound."""
        entry = self._entry(name)
        if entry.parsed is None:
            entry.parsed = decode(entry.data)
        return entry.parsed, entry.position

    def read_as(self, name: str, type: Any) -> tuple[Any, int]:
        """The view decoded as ``type`` (shared, read-only: decoded once per stored version) and its
        position; raise ObjectNotFound."""
        entry = self._entry(name)
        found = entry.typed.get(type)
        if found is None:
            found = entry.typed[type] = msgspec.json.decode(entry.data, type=type)
        return found, entry.position

    def partition_position(self, partition: str) -> int:
        """The head every view of ``partition`` reflects (0 before its projector's first write)."""
        try:
            return self.read_raw(layout.position(partition))[1]
        except ObjectNotFound:
            return 0
