"""Signed commits, the keyring, rotation and the witnessed head (issue 12).

A fresh bucket object with its own ``Ledger`` stands for a fresh process.
"""

from __future__ import annotations

import base64
import stat
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import DataError, StoredEvent

from storage.eventstore import log as log_module
from storage.eventstore import verify_chain
from storage.eventstore.commits import (
    SEGMENT_COMMITS,
    ChainBroken,
    Commit,
    commit_name,
    decode_commit,
    encode_commit,
    event_record,
    pack_segment,
    sha256_hex,
    sign_commit,
    unpack_segment,
)
from storage.eventstore.ledger import Ledger, LedgerSettings, configure_ledger
from storage.eventstore.log import PartitionLog
from storage.eventstore.signing import (
    ROOT_ROLE,
    SigningKey,
    encode_public_key,
    key_file,
    load_key,
    publish_key,
)
from storage.eventstore.verified import forget_verified
from storage.layout import keyring_prefix, witness_head
from storage.local import LocalBucket
from storage.memory import MemoryBucket

PREFIX = "platform/events/"


def event(i: int = 0) -> StoredEvent:
    return StoredEvent(uuid.uuid4(), 1, "tests:Thing.Happened", f'{{"i":{i}}}'.encode())


def process(bucket: MemoryBucket, home: Path, **settings: object) -> PartitionLog:
    """A fresh process's log of ``bucket`` (same objects, its own bucket object and ledger)."""
    view = MemoryBucket.__new__(MemoryBucket)
    view.__dict__.update(bucket.__dict__)  # the same objects, another bucket object
    configure_ledger(view, Ledger(view, home, LedgerSettings(**settings)))  # type: ignore[arg-type]
    return PartitionLog(view, PREFIX)


def test_keys_are_made_once_private_under_the_home_and_commits_verify(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    process(bucket, tmp_path).append([event()])
    process(bucket, tmp_path).append([event()])

    for role in ("embedded", ROOT_ROLE):
        assert stat.S_IMODE(key_file(tmp_path, role).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    signer = load_key(tmp_path, "embedded")
    assert signer is not None
    assert [decode_commit(bucket.read(commit_name(PREFIX, s))).key_id for s in (1, 2)] == [signer.key_id] * 2
    assert list(bucket.list(keyring_prefix())) == [f"{keyring_prefix()}{signer.key_id}.json"]
    assert process(bucket, tmp_path).max_notification_id() == 2
    keyring = Ledger(bucket, tmp_path).keyring()
    assert verify_chain(bucket, PREFIX, signatures=True, keyring=keyring).ok


def test_a_key_from_the_environment_must_be_published_by_the_root_when_the_root_is_elsewhere(
    tmp_path: Path,
) -> None:
    bucket = MemoryBucket()
    root = SigningKey.generate(ROOT_ROLE)  # the operator's, never on the writer's machine
    ledger_key = SigningKey.generate("ledger")
    seed = ledger_key.private.private_bytes_raw()
    env = {
        "TUNE_HOME": str(tmp_path),
        "TUNE_ROLE": "ledger",
        "TUNE_SIGNING_KEY": base64.b64encode(seed).decode(),
        "TUNE_ROOT_PUBLIC_KEY": base64.b64encode(root.public.public_bytes_raw()).decode(),
    }
    settings = LedgerSettings.from_env(env)

    with pytest.raises(DataError, match="not in the keyring"):
        process(bucket, tmp_path, **msgspec.structs.asdict(settings)).append([event()])
    assert not bucket.exists(commit_name(PREFIX, 1))
    assert not key_file(tmp_path, ROOT_ROLE).exists()  # the writer never makes a root of its own

    publish_key(bucket, root, ledger_key.public, "ledger")  # python -m storage.eventstore.signing publish
    process(bucket, tmp_path, **msgspec.structs.asdict(settings)).append([event()])
    assert decode_commit(bucket.read(commit_name(PREFIX, 1))).key_id == ledger_key.key_id
    assert process(bucket, tmp_path, **msgspec.structs.asdict(settings)).max_notification_id() == 1


def test_rotation_new_key_signs_on_and_old_commits_still_verify(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    process(bucket, tmp_path).append([event(1)])
    process(bucket, tmp_path).append([event(2)])
    old = load_key(tmp_path, "embedded")
    assert old is not None
    key_file(tmp_path, "embedded").rename(tmp_path / "keys" / "embedded.ed25519.retired")  # rotate
    from storage.eventstore import signing

    signing._loaded.clear()  # a fresh process: the key is read from its file again

    process(bucket, tmp_path).append([event(3)])
    new = load_key(tmp_path, "embedded")
    assert new is not None and new.key_id != old.key_id
    assert [decode_commit(bucket.read(commit_name(PREFIX, s))).key_id for s in (1, 2, 3)] == [
        old.key_id,
        old.key_id,
        new.key_id,
    ]
    assert process(bucket, tmp_path).max_notification_id() == 3  # the old commits still verify
    assert verify_chain(bucket, PREFIX, signatures=True, keyring=Ledger(bucket, tmp_path).keyring()).ok
    assert len(list(bucket.list(keyring_prefix()))) == 2  # both entries kept


def test_an_unsigned_history_reads_and_a_later_unsigned_commit_is_refused(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    old = PartitionLog(bucket, PREFIX, ledger=Ledger.unsigned(bucket))  # written before signatures
    old.append([event(1)])
    old.append([event(2)])
    process(bucket, tmp_path).append([event(3)])  # signed from here on
    assert process(bucket, tmp_path).max_notification_id() == 3
    assert verify_chain(bucket, PREFIX, signatures=True, keyring=Ledger(bucket, tmp_path).keyring()).ok

    stale = PartitionLog(bucket, PREFIX, ledger=Ledger.unsigned(bucket))
    stale.append([event(4)])  # a writer without a key (or a forger with write access)

    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path).max_notification_id()
    assert (raised.value.seq, raised.value.problem) == (4, "unsigned")
    report = verify_chain(bucket, PREFIX, signatures=True, keyring=Ledger(bucket, tmp_path).keyring())
    assert (report.first_bad_seq, report.problem) == (4, "unsigned")


def test_a_writer_refuses_a_tail_whose_signature_does_not_verify_and_names_it(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    for i in range(3):
        process(bucket, tmp_path).append([event(i)])
    name = commit_name(PREFIX, 3)
    bucket.write(name, bucket.read(name).replace(b'\\"i\\":2', b'\\"i\\":9'))

    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path).append([event()])
    assert (raised.value.seq, raised.value.problem) == (3, "bad signature")
    assert "000000000003.json" in str(raised.value)
    assert not bucket.exists(commit_name(PREFIX, 4))


def test_a_commit_signed_by_a_key_the_root_does_not_vouch_for_is_refused(tmp_path: Path) -> None:
    bucket = MemoryBucket()
    process(bucket, tmp_path).append([event()])
    forger = SigningKey.generate("embedded")
    publish_key(bucket, forger, forger)  # an entry in the keyring, signed by itself
    first = bucket.read(commit_name(PREFIX, 1))
    record = event_record(uuid.uuid4(), 1, "tests:Thing.Happened", b'{"admin":true}')
    forged = sign_commit(PREFIX, Commit(2, 2, sha256_hex(first), [record]), forger)
    bucket.create(commit_name(PREFIX, 2), encode_commit(forged))

    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path).max_notification_id()
    assert (raised.value.seq, raised.value.problem) == (2, "unknown key")


def counted_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting the signatures checked from now on."""
    checks = [0]
    real = log_module.check_signature

    def counted(*args: object) -> str:
        checks[0] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(log_module, "check_signature", counted)
    return checks


def test_a_sealed_segment_is_verified_once_per_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = MemoryBucket()
    writer = process(bucket, tmp_path / "writer")
    checks = counted_checks(monkeypatch)
    for i in range(SEGMENT_COMMITS + 1):
        writer.append([event(i)])
    assert bucket.exists(f"{PREFIX}segments/{SEGMENT_COMMITS:012d}.json")
    assert checks[0] == 0  # its own commits, just signed, are not checked again
    bucket.delete_prefix(f"{PREFIX}indexes/")  # full replays (warm starts: test_eventstore_warm)

    forget_verified()  # what follows stands for fresh processes: only the files under the homes remain
    assert process(bucket, tmp_path / "writer").max_notification_id() == SEGMENT_COMMITS + 1
    assert checks[0] == 1  # the writer recorded the segment it sealed: only the commit after it

    root = load_key(tmp_path / "writer", ROOT_ROLE)
    assert root is not None
    reader = {"root_public_key": encode_public_key(root.public)}  # another machine: another home
    checks[0] = 0
    assert process(bucket, tmp_path / "reader", **reader).max_notification_id() == SEGMENT_COMMITS + 1
    assert checks[0] == SEGMENT_COMMITS + 1  # the segment's commits, then the one after it
    forget_verified()
    checks[0] = 0
    assert process(bucket, tmp_path / "reader", **reader).max_notification_id() == SEGMENT_COMMITS + 1
    assert checks[0] == 1  # that reader's verdict was kept under its home
    kept = tmp_path / "reader" / "cache" / "verified"
    assert [stat.S_IMODE(f.stat().st_mode) for f in kept.iterdir()] == [0o600]


def test_a_verdict_is_kept_by_the_segment_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = MemoryBucket()
    writer = process(bucket, tmp_path / "writer")
    for i in range(SEGMENT_COMMITS):
        writer.append([event(i)])
    forget_verified()
    bucket.delete_prefix(f"{PREFIX}indexes/")  # a full replay (warm starts: test_eventstore_warm)
    last = commit_name(PREFIX, SEGMENT_COMMITS)
    forged = msgspec.json.decode(bucket.read(last))
    forged["events"][0]["topic"] = "forged"  # an edit of the sealed segment's last commit, and of its copy
    data = msgspec.json.encode(forged)
    bucket.write(last, data)
    segment = unpack_segment(bucket.read(f"{PREFIX}segments/{SEGMENT_COMMITS:012d}.json"))
    bucket.write(f"{PREFIX}segments/{SEGMENT_COMMITS:012d}.json", pack_segment([*segment[:-1], data]))
    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path / "writer").max_notification_id()
    assert raised.value.seq == SEGMENT_COMMITS  # not served from the verdict kept for the original


def counted_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting the commits whose bytes the log hashes to follow their links."""
    hashed = [0]
    real = log_module.sha256_hexes

    def counted(datas: list[bytes]) -> list[str]:
        hashed[0] += len(datas)
        return real(datas)

    monkeypatch.setattr(log_module, "sha256_hexes", counted)
    return hashed


def test_a_segment_object_verified_here_is_served_unhashed_and_another_one_is_checked_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = MemoryBucket()
    writer = process(bucket, tmp_path / "writer")
    for i in range(SEGMENT_COMMITS + 1):
        writer.append([event(i)])
    bucket.delete_prefix(f"{PREFIX}indexes/")  # full replays (warm starts: test_eventstore_warm)
    root = load_key(tmp_path / "writer", ROOT_ROLE)
    assert root is not None
    reader = {"root_public_key": encode_public_key(root.public)}
    hashed, checks = counted_hashes(monkeypatch), counted_checks(monkeypatch)
    expected = [(n.id, n.state) for n in writer.select_notifications(None, 1000)]

    def replayed(home: Path, **settings: object) -> list[tuple[int, bytes]]:
        forget_verified()  # a fresh process: only the files under the home remain
        hashed[0] = checks[0] = 0
        return [(n.id, n.state) for n in process(bucket, home, **settings).select_notifications(None, 1000)]

    # the writer recorded the segment object it sealed; another machine's reader, the one it verified
    assert replayed(tmp_path / "writer") == expected and (hashed[0], checks[0]) == (1, 1)
    assert replayed(tmp_path / "reader", **reader) == expected
    assert (hashed[0], checks[0]) == (SEGMENT_COMMITS + 1, SEGMENT_COMMITS + 1)
    assert replayed(tmp_path / "reader", **reader) == expected and (hashed[0], checks[0]) == (1, 1)
    name = f"{PREFIX}segments/{SEGMENT_COMMITS:012d}.json"
    [kept] = (tmp_path / "reader" / "cache" / "verified").iterdir()
    assert msgspec.json.decode(kept.read_bytes().splitlines()[-1])[4] == sha256_hex(bucket.read(name))

    # another segment object (a middle commit edited in the copy only): not served from the verdict,
    # checked whole, refused, and the commit objects served instead
    segment = unpack_segment(bucket.read(name))
    edited = msgspec.json.decode(segment[5])
    edited["events"][0]["state"] = '{"i":99}'
    bucket.write(name, pack_segment([*segment[:5], msgspec.json.encode(edited), *segment[6:]]))
    assert replayed(tmp_path / "writer") == expected
    assert hashed[0] == 2 * SEGMENT_COMMITS + 1  # the copy's commits, then the objects one by one


def test_the_commits_after_the_last_segment_are_verified_once_per_machine_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = MemoryBucket()
    writer = process(bucket, tmp_path / "writer")
    tail = log_module._TAIL_VERDICT_MIN + 4
    for i in range(SEGMENT_COMMITS + tail):
        writer.append([event(i)])
    checks = counted_checks(monkeypatch)

    def checked_by_a_fresh_process() -> int:
        forget_verified()
        checks[0] = 0
        assert process(bucket, tmp_path / "writer").max_notification_id() == len(writer.index)
        return checks[0]

    assert checked_by_a_fresh_process() == tail  # the segment's verdict is the writer's: its tail's are not
    assert checked_by_a_fresh_process() == 0  # that reader's verdict on the tail was kept under the home
    for i in range(3):
        writer.append([event(i)])
    assert checked_by_a_fresh_process() == 3  # only what came since: too few to record a verdict for
    assert checked_by_a_fresh_process() == 3

    last = commit_name(PREFIX, SEGMENT_COMMITS + tail)  # the commit the verdict was kept for, edited
    forged = msgspec.json.decode(bucket.read(last))
    forged["events"][0]["state"] = '{"i":99}'
    bucket.write(last, msgspec.json.encode(forged))
    forget_verified()
    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path / "writer").max_notification_id()
    assert raised.value.seq == SEGMENT_COMMITS + tail  # not vouched for by the verdict kept for the original


def test_heads_are_witnessed_and_a_rolled_back_log_is_not_extended(tmp_path: Path) -> None:
    bucket, witness = MemoryBucket(), LocalBucket(tmp_path / "witness", fsync=False)
    settings = {"witness_url": f"file://{tmp_path}/witness?fsync=0"}
    for i in range(4):
        process(bucket, tmp_path, **settings).append([event(i)])
    assert [n.rsplit("/", 1)[1] for n in witness.list("witness/")] == [f"{s:012d}.json" for s in (1, 2, 3, 4)]
    head = msgspec.json.decode(witness.read(witness_head("platform", 4)))
    assert head["sha256"] and head["key_id"] and head["signature"]

    for seq in (4, 3):
        bucket.delete(commit_name(PREFIX, seq))  # rolled back to commit 2
    with pytest.raises(ChainBroken) as raised:
        process(bucket, tmp_path, **settings).append([event()])
    assert (raised.value.seq, raised.value.problem) == (3, "rolled back")
    assert not bucket.exists(commit_name(PREFIX, 3))


def test_a_head_left_unwitnessed_is_published_by_the_timer(tmp_path: Path) -> None:
    bucket, witness = MemoryBucket(), LocalBucket(tmp_path / "witness", fsync=False)
    log = process(
        bucket,
        tmp_path,
        witness_url=f"file://{tmp_path}/witness?fsync=0",
        witness_every_commits=10,
        witness_every_s=0.05,
    )
    for i in range(3):
        log.append([event(i)])
    deadline = time.monotonic() + 5
    while not list(witness.list("witness/")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [n.rsplit("/", 1)[1] for n in witness.list("witness/")] == [f"{3:012d}.json"]  # the last one


def _counting_verifies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    verified: list[int] = []
    real = log_module.check_signature

    def check(prefix: str, commit: Commit, keyring: object) -> str:
        verified.append(commit.seq)
        return real(prefix, commit, keyring)  # type: ignore[arg-type]

    monkeypatch.setattr(log_module, "check_signature", check)
    return verified


def test_a_writer_catching_up_verifies_the_signature_of_each_stretch_s_last_commit_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 7: each of N writers reads every other's commits; the last signature of what it
    reads vouches for the rest (each writer verified the tail it linked to), the links are all checked."""
    bucket = MemoryBucket()
    fast, slow = process(bucket, tmp_path), process(bucket, tmp_path)
    fast.append([event(0)])
    slow.max_notification_id()
    for i in range(1, 5):
        fast.append([event(i)])
    monkeypatch.setattr(log_module.time, "sleep", lambda _: None)  # the back-off after the lost create
    verified = _counting_verifies(monkeypatch)

    assert slow.append([event(9)]) == [6]
    assert verified == [2, 5]  # the winner of the create it lost (2), then the stretch 3..5: its last
    assert process(bucket, tmp_path).max_notification_id() == 6  # a reader still verifies every commit


def test_a_writer_catching_up_past_forged_commits_names_the_first_forged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forged commits with correct links (no writer's key): the stretch's last signature fails, so every
    signature of the stretch is checked and the first that does not verify is named."""
    bucket = MemoryBucket()
    process(bucket, tmp_path).append([event(0)])
    writer = process(bucket, tmp_path)
    writer.max_notification_id()  # at commit 1
    for i in (1, 2):
        process(bucket, tmp_path).append([event(i)])
    third = decode_commit(bucket.read(commit_name(PREFIX, 3)))
    prev = sha256_hex(bucket.read(commit_name(PREFIX, 3)))
    for seq in (4, 5, 6):  # correct links, the signature of commit 3 (valid for commit 3 only)
        forged = msgspec.structs.replace(third, seq=seq, first_id=seq, prev_sha256=prev)
        bucket.create(commit_name(PREFIX, seq), encode_commit(forged))
        prev = sha256_hex(encode_commit(forged))
    monkeypatch.setattr(log_module.time, "sleep", lambda _: None)
    verified = _counting_verifies(monkeypatch)

    with pytest.raises(ChainBroken) as raised:
        writer.append([event(9)])
    assert (raised.value.seq, raised.value.problem) == (4, "bad signature")
    assert not bucket.exists(commit_name(PREFIX, 7))
    # lost the create of 2: its winner verified; the stretch 3..6: its last fails, then each in turn
    assert verified == [2, 6, 3, 4]
