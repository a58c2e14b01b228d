"""Spools of unsent heartbeats: what a runner could not deliver, metered when the ledger finds it.

A runner that lost its control plane writes the heartbeats it could not deliver (its final one
included) to one create-only object, ``users/<uid>/unsent-heartbeats/<jid>/<n>.jsonl``
(``runners.heartbeat_spool``). The ledger meters them like any batch (``LedgerWorker.handle``:
signatures checked, clocks bounded, repeats of ``(job, attempt, seq)`` dropped), so a heartbeat
that was delivered too, or a spool read twice, is billed once. It finds them:

- when it starts (``LedgerWorker.recover``): every user's ``unsent-heartbeats/`` is listed once;
- later (``LedgerWorker.sweep``): an attempt that went quiet without its final heartbeat may be
  an orphan still ending; its spool is looked for at every sweep for ``EXPECT_FOR`` after that.

Spools are kept (they are what the runner said, written once); reading one again meters nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec

from projections import users as user_views
from storage import Bucket, ObjectNotFound, layout
from storage.heartbeats import Heartbeat, decode_heartbeat

__all__ = ["EXPECT_FOR", "SpoolWatch", "all_spools", "read_spool"]

log = logging.getLogger(__name__)

EXPECT_FOR = timedelta(minutes=15)
"""How long after an attempt went quiet its spool is looked for (its runner may first checkpoint,
upload and record its outcome; a spool written later is metered at the ledger's next start)."""


class Expected(NamedTuple):
    user_id: str
    job_id: str
    attempt: int

    @property
    def name(self) -> str:
        return layout.unsent_heartbeats(self.user_id, self.job_id, self.attempt)


def read_spool(bucket: Bucket, name: str) -> list[Heartbeat]:
    """The heartbeats of spool ``name`` (a line that is no heartbeat is logged and skipped)."""
    heartbeats = []
    for number, line in enumerate(bucket.read(name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            heartbeats.append(decode_heartbeat(line))
        except msgspec.DecodeError as exc:
            log.error("%s line %d is not a heartbeat, skipped: %s", name, number, exc)
    return heartbeats


def all_spools(bucket: Bucket) -> Iterator[str]:
    """Every spool in the bucket: one listing per user of ``platform/metadata/users.json``."""
    try:
        users = msgspec.json.decode(bucket.read(layout.users()), type=user_views.UsersView)
    except ObjectNotFound:
        return
    for user in users.users:
        for name in bucket.list(layout.unsent_heartbeats_prefix(user.user_id)):
            if name.endswith(".jsonl"):
                yield name


class SpoolWatch:
    """The spools the sweep looks for: of attempts that went quiet without a final heartbeat."""

    def __init__(self, expect_for: timedelta = EXPECT_FOR) -> None:
        self.expect_for = expect_for
        self._until: dict[Expected, datetime] = {}
        self._done: set[Expected] = set()
        self._lock = threading.Lock()

    def expect(self, user_id: str, job_id: str, attempt: int, now: datetime) -> None:
        """Look for the spool of this attempt until ``now + expect_for`` (not again once looked for)."""
        key = Expected(user_id, job_id, attempt)
        with self._lock:
            if key not in self._done:
                self._until.setdefault(key, now + self.expect_for)

    def due(self, now: datetime) -> list[Expected]:
        """The spools still looked for (those past their time are dropped)."""
        with self._lock:
            for key in [k for k, until in self._until.items() if until < now]:
                del self._until[key]
            return list(self._until)

    def found(self, expected: Expected) -> None:
        """The spool was metered: not looked for again."""
        with self._lock:
            self._until.pop(expected, None)
            if len(self._done) > 100_000:
                self._done.clear()
            self._done.add(expected)

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)
