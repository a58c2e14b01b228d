"""Every way to rewrite a partition's log unseen is named by the audit (issue 12), on both buckets.

A table: each tamper class x (audited at once, audited after 3 further writes by fresh processes)
x (a local folder, fake-gcs-server). The log is signed (the role's key, in the root-signed keyring)
and witnessed after every commit (``TUNE_WITNESS``: a second bucket of the same kind). No views are
projected, so position.json anchors nothing: each cell is caught by the signatures or the witness.

A fresh process is a fresh bucket object with its own ``Ledger`` (same home: the same machine):
it shares no log, keyring or witness state with the writer, exactly what a new process has. A
fresh writer that meets a broken log refuses to append (``ChainBroken``); its attempt still counts
as one of the 3 writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import DataError

from projections.audit import audit_partition
from projections.replay import apps_on
from storage import Bucket
from storage.eventstore import open_user
from storage.eventstore.commits import (
    Commit,
    commit_name,
    decode_commit,
    encode_commit,
    sha256_hex,
    sign_commit,
)
from storage.eventstore.ledger import Ledger, LedgerSettings, configure_ledger
from storage.eventstore.signing import SigningKey, make_entry
from storage.layout import keyring_entry, user_events, user_partition
from tests import emulators

USER = "usr_tamper"
PARTITION = user_partition(USER)
PREFIX = user_events(USER)
AT = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)
COMMITS = 6


class World:
    """One bucket (and its witness) as seen by one process at a time."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.home = kind, tmp_path / "home"
        if kind == "local":
            self.url = f"file://{tmp_path}/bucket?fsync=0"  # a test: no power loss to survive
            self.witness_url = f"file://{tmp_path}/witness?fsync=0"
        else:
            emulator = request.getfixturevalue("fake_gcs")
            names = [f"tamper-{uuid.uuid4().hex[:16]}" for _ in range(2)]
            for name in names:
                emulators.create_gcs_bucket(emulator, name)
            self.url, self.witness_url = (f"gs://{name}" for name in names)

    def process(self) -> Bucket:
        """The bucket as a fresh process opens it: a new object, with the process's own ledger."""
        from storage.open import open_bucket

        bucket = open_bucket(self.url)
        settings = LedgerSettings(role="api", witness_url=self.witness_url)
        configure_ledger(bucket, Ledger(bucket, self.home, settings))
        return bucket

    def write(self, limit: int) -> None:
        """One commit, by a fresh process."""
        open_user(self.process(), USER).set_budget(limit, AT)


def _data(bucket: Bucket, seq: int) -> bytes:
    return bucket.read(commit_name(PREFIX, seq))


def edit_middle(bucket: Bucket) -> None:
    bucket.write(commit_name(PREFIX, 3), _data(bucket, 3).replace(b"7000003", b"7999993"))


def edit_last(bucket: Bucket) -> None:
    bucket.write(commit_name(PREFIX, COMMITS), _data(bucket, COMMITS).replace(b"7000006", b"7999996"))


def delete_tail(bucket: Bucket) -> None:
    for seq in (COMMITS, COMMITS - 1):
        bucket.delete(commit_name(PREFIX, seq))


def insert(bucket: Bucket) -> None:
    """A copy of commit 3 inserted at 4, the later ones renamed up to make room."""
    for seq in range(COMMITS, 3, -1):
        bucket.write(commit_name(PREFIX, seq + 1), _data(bucket, seq))
    bucket.write(commit_name(PREFIX, 4), _data(bucket, 3))


def _next_commit(bucket: Bucket) -> Commit:
    """A commit 7 linked correctly to the real commit 6, granting a budget nobody set."""
    last = decode_commit(_data(bucket, COMMITS))
    event = last.events[-1]
    granted = msgspec.structs.replace(
        event,
        originator_version=event.originator_version + 1,
        state=(event.state or "").replace("7000006", "9999999"),
    )
    link = sha256_hex(_data(bucket, COMMITS))
    return Commit(COMMITS + 1, last.first_id + len(last.events), link, [granted])


def append_forged(bucket: Bucket) -> None:
    bucket.create(commit_name(PREFIX, COMMITS + 1), encode_commit(_next_commit(bucket)))


def sign_with_unknown_key(bucket: Bucket) -> None:
    """Commit 7 signed by the forger's key, which the forger also put in the keyring (signed by itself)."""
    forger = SigningKey.generate("api")
    bucket.create(keyring_entry(forger.key_id), msgspec.json.encode(make_entry(forger, forger)))
    forged = sign_commit(PREFIX, _next_commit(bucket), forger)
    bucket.create(commit_name(PREFIX, COMMITS + 1), encode_commit(forged))


def roll_back(bucket: Bucket, snapshot: dict[str, bytes]) -> None:
    """The whole bucket put back as it was after commit 3 (an older witnessed head)."""
    for name in list(bucket.list("")):
        if name not in snapshot:
            bucket.delete(name)
    for name, data in snapshot.items():
        bucket.write(name, data)


Tamper = Callable[[Bucket], None]
TAMPERS: dict[str, tuple[Tamper | None, set[str], set[int]]] = {
    # class: (the tamper, the problems that name it, at the commits)
    "edit a middle commit": (edit_middle, {"bad signature", "edited"}, {3}),
    "edit the last commit": (edit_last, {"bad signature", "edited", "forged"}, {COMMITS}),
    "delete the tail": (delete_tail, {"rolled back", "missing"}, {COMMITS - 1}),
    "insert a commit": (insert, {"inserted", "out of place", "edited", "bad signature"}, {3, 4}),
    "append a forged commit with a correct link": (append_forged, {"unsigned"}, {COMMITS + 1}),
    "roll back to an older witnessed head": (None, {"rolled back"}, {4}),
    "sign with an unknown key": (sign_with_unknown_key, {"unknown key"}, {COMMITS + 1}),
}


@pytest.mark.parametrize("kind", ["local", pytest.param("gcs", marks=pytest.mark.gcs)])
@pytest.mark.parametrize("later_writes", [0, 3], ids=["at once", "after 3 fresh writes"])
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_every_tamper_is_named(
    tamper: str, later_writes: int, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    world = World(kind, tmp_path, request)
    snapshot: dict[str, bytes] = {}
    for i in range(1, COMMITS + 1):
        world.write(7_000_000 + i)
        if i == 3:
            bucket = world.process()
            snapshot = {name: bucket.read(name) for name in bucket.list("")}
    clean = audit_partition(world.process(), PARTITION, apps_on(world.process()))
    assert clean.chain.ok, clean.chain.problems
    assert clean.witness.startswith(f"witnessed up to commit {COMMITS}")

    change, names, seqs = TAMPERS[tamper]
    bucket = world.process()
    if change is None:
        roll_back(bucket, snapshot)
    else:
        change(bucket)
    refused = 0
    for i in range(later_writes):
        try:
            world.write(8_000_000 + i)
        except DataError:  # ChainBroken: the fresh writer would not extend the broken log
            refused += 1

    bucket = world.process()
    report = audit_partition(bucket, PARTITION, apps_on(bucket))

    named = [(p.problem, p.seq) for p in report.chain.problems]
    assert any(problem in names and seq in seqs for problem, seq in named), (tamper, named)
    assert not report.ok
    if later_writes and tamper != "edit a middle commit":  # the writers met the broken tail
        assert refused == later_writes, (tamper, named)
