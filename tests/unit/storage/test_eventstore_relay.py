"""The relay (issue 12 item 7): one writer per partition and key commits the batches of the others.

A fresh bucket object with its own ``Ledger`` stands for a fresh process (they share this process's
relay server, as two processes would share a leader's).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from storage.eventstore import relay as relay_module
from storage.eventstore import verify_chain
from storage.eventstore.commits import commit_name, decode_commit, event_record
from storage.eventstore.ledger import Ledger, LedgerSettings, configure_ledger
from storage.eventstore.log import PartitionLog
from storage.eventstore.relay import Lease, Relay, RelaySettings, relay_tokens
from storage.layout import relay_lease
from storage.local import LocalBucket

PREFIX = "platform/events/"


@pytest.fixture(autouse=True)
def relay_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_RELAY", "on")
    monkeypatch.setattr(relay_module, "_SAME_PROCESS", True)  # these logs stand for processes


def event(i: int = 0, originator: uuid.UUID | None = None) -> StoredEvent:
    return StoredEvent(originator or uuid.uuid4(), 1, "tests:Thing.Happened", f'{{"i":{i}}}'.encode())


def process(root: Path, home: Path, **settings: object) -> PartitionLog:
    """A fresh process's log of the bucket in ``root`` (its own bucket object and ledger)."""
    bucket = LocalBucket(root, fsync=False)
    configure_ledger(bucket, Ledger(bucket, home, LedgerSettings(**settings)))  # type: ignore[arg-type]
    return PartitionLog(bucket, PREFIX)


def commit(log: PartitionLog, seq: int) -> object:
    return decode_commit(log.bucket.read(commit_name(PREFIX, seq)))


def relay_of(log: PartitionLog) -> Relay:
    relay = log._the_relay()
    assert relay is not None
    return relay


def _settle(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within 5 s (the relay server's threads act on their own time)."""
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def leader(tmp_path: Path) -> PartitionLog:
    log = process(tmp_path / "bucket", tmp_path / "home")
    relay_of(log).contended()  # as after a create lost to another writer
    log.append([event()])  # finds no lease: takes it, writes directly
    assert relay_of(log).leading
    yield log
    relay_of(log).release()


def test_a_follower_hands_its_batch_to_the_leader_which_records_its_token(
        tmp_path: Path, leader: PartitionLog) -> None:
    follower = process(tmp_path / "bucket", tmp_path / "home")
    assert follower.append([event(1)]) == [2]
    assert follower.append([event(2), event(3)]) == [3, 4]

    assert not relay_of(follower).leading
    assert follower.index.tail_seq == 0  # relayed: its own index is behind until its next read
    assert follower.max_notification_id() == 4
    tokens = [relay_tokens(commit(leader, seq).nonce) for seq in (1, 2, 3)]  # type: ignore[attr-defined]
    assert tokens[0] == {} and len(tokens[1]) == len(tokens[2]) == 1
    signer = leader.ledger.signer()
    assert signer is not None
    assert {commit(leader, s).key_id for s in (1, 2, 3)} == {signer.key_id}  # type: ignore[attr-defined]
    assert verify_chain(leader.bucket, PREFIX, signatures=True, keyring=leader.ledger.keyring()).ok


def test_integrity_error_from_the_leader_reaches_the_follower_as_integrity_error(
        tmp_path: Path, leader: PartitionLog) -> None:
    taken = event()
    leader.append([taken])
    follower = process(tmp_path / "bucket", tmp_path / "home")
    with pytest.raises(IntegrityError):  # its index knows nothing: the leader's check refuses it
        follower.append([StoredEvent(taken.originator_id, 1, taken.topic, b'{"other":1}')])
    assert not relay_of(follower).leading
    assert follower.append([event(5)]) == [3]  # the next batch goes on
    assert process(tmp_path / "bucket", tmp_path / "home").max_notification_id() == 3


def test_a_bad_mac_is_refused(tmp_path: Path, leader: PartitionLog) -> None:
    lease = msgspec.json.decode(leader.bucket.read(relay_lease("platform", relay_of(leader).signer.key_id)),
                                type=Lease)
    request = relay_module._Request(leader.bucket.url, PREFIX, lease.key_id, "t" * 24,
                                    [event_record(uuid.uuid4(), 1, "tests:Forged", b"{}")])
    body = relay_module._encoder.encode(request)
    host, _, port = lease.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        mac = hmac.new(b"not the key", body, hashlib.sha256).digest()
        sock.sendall(struct.pack(">I", len(body)) + mac + body)
        assert sock.recv(100) == b""  # closed without an answer
    assert process(tmp_path / "bucket", tmp_path / "home").max_notification_id() == 1


def test_a_process_of_another_key_does_not_relay_to_this_leader(tmp_path: Path, leader: PartitionLog) -> None:
    other = process(tmp_path / "bucket", tmp_path / "home", role="ledger")
    relay_of(other).contended()
    assert other.append([event(1)]) == [2]

    mine, theirs = relay_of(leader).signer.key_id, relay_of(other).signer.key_id
    assert mine != theirs
    assert relay_of(other).leading  # its own key's lease: a leader of its own
    assert relay_of(other).lease_name == relay_lease("platform", theirs) != relay_lease("platform", mine)
    written = commit(leader, 2)
    assert written.key_id == theirs and relay_tokens(written.nonce) == {}  # type: ignore[attr-defined]


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    first = process(tmp_path / "bucket", tmp_path / "home")
    name = relay_lease("platform", relay_of(first).signer.key_id)
    stale = Lease("127.0.0.1:1", 1, relay_of(first).signer.key_id, time.time() - 1, "x")
    first.bucket.write(name, msgspec.json.encode(stale))
    relay_of(first).contended()
    try:
        assert first.append([event()]) == [1]
        lease = msgspec.json.decode(first.bucket.read(name), type=Lease)
        assert relay_of(first).leading and lease.pid != 1 and lease.expires > time.time()
    finally:
        relay_of(first).release()
    assert msgspec.json.decode(first.bucket.read(name), type=Lease).expires == 0  # released


def test_a_leader_whose_port_refuses_connections_is_replaced_at_once(tmp_path: Path) -> None:
    log = process(tmp_path / "bucket", tmp_path / "home")
    name = relay_lease("platform", relay_of(log).signer.key_id)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    gone = Lease(f"127.0.0.1:{port}", 1, relay_of(log).signer.key_id, time.time() + 60, "x")
    log.bucket.write(name, msgspec.json.encode(gone))
    try:
        assert log.append([event()]) == [1]  # written directly
        assert relay_of(log).leading
        assert msgspec.json.decode(log.bucket.read(name), type=Lease).address != gone.address
    finally:
        relay_of(log).release()


def test_a_batch_committed_by_the_leader_whose_reply_is_lost_is_found_by_its_token(
        tmp_path: Path, leader: PartitionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reply(sock: socket.socket, key: bytes) -> bytes:
        raise ConnectionError("the leader died before replying")

    follower = process(tmp_path / "bucket", tmp_path / "home")
    monkeypatch.setattr(relay_module, "_recv", no_reply)
    saved = event(1)
    assert follower.append([saved]) == [2]

    reader = process(tmp_path / "bucket", tmp_path / "home")
    notifications = reader.select_notifications(1, 10)
    assert [n.id for n in notifications] == [1, 2]  # once, not written again by the follower
    assert notifications[1].originator_id == saved.originator_id


def test_a_batch_the_leader_lost_is_written_by_the_follower(
        tmp_path: Path, leader: PartitionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def dropped(request: relay_module._Request) -> relay_module._Reply:
        raise ConnectionError("killed before committing")  # the server thread ends: connection closed

    follower = process(tmp_path / "bucket", tmp_path / "home")
    monkeypatch.setattr(relay_of(leader), "commit", dropped)
    assert follower.append([event(1)]) == [2]
    assert relay_tokens(commit(leader, 2).nonce) == {}  # type: ignore[attr-defined]
    assert process(tmp_path / "bucket", tmp_path / "home").max_notification_id() == 2


def test_appends_with_tracking_never_relay(tmp_path: Path, leader: PartitionLog) -> None:
    follower = process(tmp_path / "bucket", tmp_path / "home")
    follower.append([event(1)], Tracking("upstream", 1))
    assert relay_tokens(commit(leader, 2).nonce) == {}  # type: ignore[attr-defined]
    assert follower.index.tail_seq == 2  # written by itself


def test_off_and_old_nonces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_RELAY", "off")
    assert not RelaySettings.from_env().enabled
    monkeypatch.setenv("TUNE_RELAY_HOST", "10.0.0.7")
    assert RelaySettings.from_env().host == "10.0.0.7"
    assert relay_tokens("") == {} and relay_tokens("0123abcd") == {}  # commits of older releases
    assert relay_tokens("ab;t1:0,t2:3") == {"t1": 0, "t2": 3}


def test_an_idle_leader_leaves_and_takes_the_lease_again_when_it_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE_RELAY_TTL_S", "0.3")
    log = process(tmp_path / "bucket", tmp_path / "home")
    relay = relay_of(log)
    relay.contended()
    log.append([event()])
    assert relay.leading
    deadline = time.monotonic() + 5
    while relay.leading and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not relay.leading  # no renewals for a partition nobody writes
    assert msgspec.json.decode(log.bucket.read(relay.lease_name), type=Lease).expires == 0
    relay.contended()
    log.append([event(1)])
    assert relay.leading
    relay.release()


def test_a_process_writing_alone_takes_no_lease(tmp_path: Path) -> None:
    log = process(tmp_path / "bucket", tmp_path / "home")
    for i in range(3):
        log.append([event(i)])
    assert not relay_of(log).leading
    assert not log.bucket.exists(relay_of(log).lease_name)


def test_a_writer_that_loses_a_create_to_another_takes_the_lease(tmp_path: Path) -> None:
    first, second = (process(tmp_path / "bucket", tmp_path / "home") for _ in range(2))
    first.append([event(1)])
    second.append([event(2)])  # a cold process behind: that is no sign of a race yet
    assert not relay_of(second).leading
    first.append([event(3)])  # another writer's commit before ours: contended
    assert not relay_of(first).leading
    first.append([event(4)])  # looks for a leader: none, so it leads
    assert relay_of(first).leading
    assert second.append([event(5)]) == [5]
    relay_of(first).release()


def test_a_pinned_follower_sees_its_relayed_save_at_once(tmp_path: Path, leader: PartitionLog) -> None:
    follower = process(tmp_path / "bucket", tmp_path / "home")
    saved = event(1)
    with follower.pinned():
        assert follower.append([saved]) == [2]
        assert not relay_of(follower).leading
        assert [e.originator_version for e in follower.select_events(saved.originator_id)] == [1]


def test_a_leader_serves_a_bounded_number_of_connections_and_a_follower_past_it_writes_itself(
        tmp_path: Path, leader: PartitionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = msgspec.json.decode(leader.bucket.read(relay_lease("platform", relay_of(leader).signer.key_id)),
                                type=Lease)
    relay_module._drop_idle(lease.address)  # followers of earlier tests: no pooled connection left
    server = relay_module._the_server(lease.address.rpartition(":")[0])
    assert _settle(lambda: server.connections == 0)
    monkeypatch.setattr(relay_module, "MAX_CONNECTIONS", 1)
    host, _, port = lease.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5):  # idle, it holds the only slot
        assert _settle(lambda: server.connections == 1)
        follower = process(tmp_path / "bucket", tmp_path / "home")
        assert follower.append([event(1)]) == [2]  # refused a connection: written by the follower itself
        assert relay_tokens(commit(leader, 2).nonce) == {}  # type: ignore[attr-defined]
        assert server.connections == 1
    assert _settle(lambda: server.connections == 0)
    again = process(tmp_path / "bucket", tmp_path / "home")
    assert again.append([event(2)]) == [3]  # a slot free: relayed again
    assert len(relay_tokens(commit(leader, 3).nonce)) == 1  # type: ignore[attr-defined]


def test_a_leader_closes_a_connection_idle_too_long_and_a_follower_never_reuses_one_that_old(
        tmp_path: Path, leader: PartitionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = msgspec.json.decode(leader.bucket.read(relay_lease("platform", relay_of(leader).signer.key_id)),
                                type=Lease)
    relay_module._drop_idle(lease.address)
    server = relay_module._the_server(lease.address.rpartition(":")[0])
    assert _settle(lambda: server.connections == 0)
    monkeypatch.setattr(relay_module, "SERVER_IDLE_S", 0.2)
    host, _, port = lease.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as idle:
        assert idle.recv(10) == b""  # closed by the leader once idle 0.2 s
    assert _settle(lambda: server.connections == 0)  # and its thread is gone

    monkeypatch.setattr(relay_module, "POOL_IDLE_S", 0.0)  # every pooled connection is too old to reuse
    follower = process(tmp_path / "bucket", tmp_path / "home")
    assert follower.append([event(1)]) == [2]
    pooled = [sock for sock, _ in relay_module._idle[lease.address]]
    assert follower.append([event(2)]) == [3]
    assert all(sock.fileno() == -1 for sock in pooled)  # closed, not reused
    assert [len(relay_tokens(commit(leader, seq).nonce)) for seq in (2, 3)] == [1, 1]  # type: ignore[attr-defined]
