"""The relay: one writer per partition (per signing key) commits the batches of the others.

Several processes appending to one partition race for each commit name (see
``storage.eventstore.log``): each must read every other writer's commit before
it can create the next, so eight writers reach less than one. The relay makes
one of them the partition's leader and has the others hand it their batches;
its group commit (``PartitionLog.append``) then writes the batches of every
process in one commit, one create for them all.

Lease. ``<partition>/writers/<key_id>.json`` (``storage.layout.relay_lease``; not
under ``events/``): ``{address, pid, key_id, expires, nonce}``, taken create-only
or, when expired (or its leader's port refuses connections), by a write matching
the generation read, so only one process wins it; renewed the same way every
ttl/3 (``TUNE_RELAY_TTL_S``, 10 s); released (written expired, generation-matched)
on exit and after a ttl without appends, so an idle partition costs no renewals.
A leader that fails to renew steps down (stops taking batches). A process takes
the lease only once it has met another writer (``contended``: it lost a commit's
name, or found another writer's commits under the folder's lock), so a partition
written by one process never gets a lease; it looks for a lease at most every
a ttl until then (one read). Each signing key has its own lease: a process
relays only to a leader of its own key, since the leader signs the commit with
that key; other roles on the partition write directly (a handful, not N
processes). Two logs of one partition in one process (tests, the audit) race
as before rather than relay to each other.

Protocol. TCP (the leader binds ``TUNE_RELAY_HOST``, 127.0.0.1 by default, on
any free port, and advertises ``host:port`` in the lease). A frame is a 4-byte
length, an HMAC-SHA256 of the body, and the body (msgpack): a request holds the
bucket's URL, the partition prefix, the key id, a random token and the events;
a reply holds the token and the ids, or the error's class and message. The MAC
key is derived from the signing key's private seed (``relay_mac_key``): only a
process holding that key can hand the leader a batch or answer for one. The
leader refuses a bad MAC (closes the connection), a foreign key id or a
partition it does not lead (the follower then writes directly). Each batch is
queued as its own ``_Batch`` in the leader's group commit: checked on its own (a
conflicting batch gets IntegrityError alone; IntegrityError, DataError and
OperationalError reach the follower as the same class). Appends with tracking
(process recorders) never relay. Before it moves the tail, a leader waits a
little (at most half a create, 2 ms) until as many batches are queued as
followers relayed in the last second: they then share one commit. It does not
back off after a lost create (``PartitionLog``): it carries everyone's batches.

Nothing acknowledged is lost or duplicated. The follower acknowledges a save
only on a leader's reply that the batch is committed (the commit is created: in
the log), or on finding its token in the log. The leader records the token of
each relayed batch in the commit's nonce (``<nonce>;<token>:<offset>,...``,
covered by the signature; older commits, whose nonce has no ``;``, still read).
When the connection fails or times out before the reply, the outcome is
unknown: the follower reads the commits after the tail it knew when it sent the
batch and looks for its token (found: its ids, from the commit's first id and the
batch's offset). Not found: it writes the batch itself. Should the old leader
commit the same batch later anyway, the two commits hold the same (originator_id,
version) keys, so the second one is refused (IntegrityError) by the chain's
own check: the batch is in the log once. A direct write that gets IntegrityError
looks for the token once more before raising (the old leader may have won).
The leader checks the tail it links to as every writer does, so a broken chain
is never extended by a relayed batch either. The follower's own index is behind
after a relayed save; its next read looks past its tail, as after any other
process's commit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import hashlib
import hmac
import logging
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING

import msgspec
from eventsourcing.persistence import DataError, IntegrityError, OperationalError

from storage.bucket import AlreadyExists, BucketError, ObjectNotFound, PreconditionFailed
from storage.eventstore.commits import EventRecord, commit_name, decode_commit
from storage.eventstore.signing import SigningKey
from storage.eventstore.witness import partition_of
from storage.layout import relay_lease

if TYPE_CHECKING:
    from storage.eventstore.log import PartitionLog

__all__ = [
    "MAX_CONNECTIONS",
    "RELAY_ENV",
    "RELAY_HOST_ENV",
    "RELAY_TTL_ENV",
    "Lease",
    "Relay",
    "RelaySettings",
    "relay_mac_key",
    "relay_tokens",
]

RELAY_ENV = "TUNE_RELAY"
"""``off``: every process writes directly (no leases, no server); ``on`` (the default): relay."""
RELAY_HOST_ENV = "TUNE_RELAY_HOST"
"""The host a leader binds and advertises (127.0.0.1: processes of one machine)."""
RELAY_TTL_ENV = "TUNE_RELAY_TTL_S"
"""How long a lease lasts unrenewed (10 s); renewed every third of it."""
_MAC_LABEL = b"tune event store relay v1"
_SAME_PROCESS = False  # relay to a leader in this very process (two logs of one partition): tests only
_RELEASE_AT_EXIT_S = 2.0
_LINGER_MAX_S = 0.002
_MAX_FRAME = 16 * 1024 * 1024
MAX_CONNECTIONS = 256
"""Followers' connections a leader's process serves at once, a thread each (a follower keeps one open per
save it has in flight). One more is closed at once: its follower, answered by no one, finds its batch is
not in the log and writes it itself, so a flood of connections costs speed, never a batch."""
SERVER_IDLE_S = 60.0
"""A leader closes a connection that brings no request for this long (its thread ends)."""
POOL_IDLE_S = 30.0
"""A follower reuses a pooled connection only if it was used this recently (well within SERVER_IDLE_S:
never one the leader may be closing), else opens a new one."""
_log = logging.getLogger(__name__)


class RelaySettings(msgspec.Struct, frozen=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    ttl_s: float = 10.0

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> RelaySettings:
        env = os.environ if env is None else env
        flag = (env.get(RELAY_ENV) or "on").strip().lower()
        if flag not in ("on", "off", "1", "0", "true", "false"):
            raise ValueError(f"{RELAY_ENV} is on or off (got {flag!r})")
        ttl = float(env.get(RELAY_TTL_ENV) or 10.0)
        if ttl <= 0:
            raise ValueError(f"{RELAY_TTL_ENV} must be positive (got {ttl})")
        return cls(enabled=flag in ("on", "1", "true"), host=(env.get(RELAY_HOST_ENV) or "127.0.0.1").strip(),
                   ttl_s=ttl)


class Lease(msgspec.Struct, frozen=True):
    """The lease object: who leads a partition's writers of one key, until when."""

    address: str
    pid: int
    key_id: str
    expires: float
    nonce: str


class _Request(msgspec.Struct, frozen=True):
    bucket: str
    prefix: str
    key_id: str
    token: str
    events: list[EventRecord]


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    token: str
    ids: list[int] = []
    seq: int = 0
    """The commit that holds the batch (a later lost reply is looked for after it)."""
    error: str = ""
    """"" (committed), or the error's class: IntegrityError, DataError, OperationalError, or NotLeader."""
    message: str = ""


_ERRORS: dict[str, type[Exception]] = {
    "IntegrityError": IntegrityError, "DataError": DataError, "OperationalError": OperationalError}
_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(_Request)
_reply_decoder = msgspec.msgpack.Decoder(_Reply)
_lease_decoder = msgspec.json.Decoder(Lease)


def relay_mac_key(signer: SigningKey) -> bytes:
    """The HMAC key of relay frames: derived from ``signer``'s private seed (a process without that key
    can neither hand a batch to its leader nor answer for one)."""
    return hmac.new(base64.b64decode(signer.seed()), _MAC_LABEL, hashlib.sha256).digest()


def relay_tokens(nonce: str) -> dict[str, int]:
    """The relayed batches a commit's ``nonce`` records: token -> offset of its first event in the commit."""
    _, sep, rest = nonce.partition(";")
    found: dict[str, int] = {}
    if sep:
        for entry in rest.split(","):
            token, _, offset = entry.partition(":")
            if token and offset.isdigit():
                found[token] = int(offset)
    return found


# -- frames ---------------------------------------------------------------------------------------


def _send(sock: socket.socket, key: bytes, body: bytes) -> None:
    sock.sendall(struct.pack(">I", len(body)) + hmac.new(key, body, hashlib.sha256).digest() + body)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, key: bytes) -> bytes:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > _MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes")
    mac = _recv_exact(sock, 32)
    body = _recv_exact(sock, size)
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise PermissionError("a relay frame with a bad MAC")
    return body


# -- the leader's server (one per process, for every partition it leads) -------------------------


class _Server:
    """Accepts followers' connections; each request goes to the log it names, if this process leads it."""

    def __init__(self, host: str) -> None:
        self.connections = 0  # served now (a thread each): at most MAX_CONNECTIONS
        self.sock = socket.create_server((host, 0))
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        # (bucket url, prefix, key id) -> its relay (weakly: a log dropped from the process's cache goes)
        self.relays: weakref.WeakValueDictionary[tuple[str, str, str], Relay] = weakref.WeakValueDictionary()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                full = self.connections >= MAX_CONNECTIONS
                if not full:
                    self.connections += 1
            if full:  # its follower gets no answer, finds its batch is not in the log, and writes it itself
                _log.warning("relay: %d connections already served: one more closed", MAX_CONNECTIONS)
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), name="relay-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_frames(conn)
        finally:
            with self.lock:
                self.connections -= 1

    def _serve_frames(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(SERVER_IDLE_S)  # idle that long: closed (a timeout is an OSError)
            while True:
                try:
                    header = _recv_exact(conn, 36)
                except (OSError, ConnectionError):
                    return
                (size,) = struct.unpack(">I", header[:4])
                if size > _MAX_FRAME:
                    return
                try:
                    body = _recv_exact(conn, size)
                    request = _request_decoder.decode(body)
                except (OSError, ConnectionError, msgspec.DecodeError, msgspec.ValidationError):
                    return
                with self.lock:
                    relay = self.relays.get((request.bucket, request.prefix, request.key_id))
                if relay is None or relay.mac_key is None:
                    return  # no key to check it with: the follower finds no answer and writes directly
                key = relay.mac_key
                if not hmac.compare_digest(header[4:], hmac.new(key, body, hashlib.sha256).digest()):
                    _log.warning("relay: refused a batch for %s with a bad MAC", request.prefix)
                    return
                try:
                    reply = relay.commit(request, id(conn))
                except BaseException:  # no answer: the follower looks for its batch, then writes it itself
                    _log.exception("relay: a relayed batch for %s failed", request.prefix)
                    return
                try:
                    _send(conn, key, _encoder.encode(reply))
                except OSError:
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


_server: _Server | None = None
_server_lock = threading.Lock()
_relays: weakref.WeakSet[Relay] = weakref.WeakSet()


def _the_server(host: str) -> _Server:
    global _server
    with _server_lock:
        if _server is None:
            _server = _Server(host)
        return _server


# -- connections to leaders (kept open, one per request in flight) -------------------------------

_idle: dict[str, list[tuple[socket.socket, float]]] = {}  # address -> (connection, when put back)
_idle_lock = threading.Lock()


def _connect(address: str, timeout: float) -> socket.socket:
    """A pooled connection to ``address`` used within ``POOL_IDLE_S``, else a new one (staler pooled ones
    are closed)."""
    stale = []
    found = None
    with _idle_lock:
        pool = _idle.get(address, [])
        while pool and found is None:
            sock, put_back = pool.pop()
            if time.monotonic() - put_back < POOL_IDLE_S:
                found = sock
            else:
                stale.append(sock)
    for sock in stale:
        with contextlib.suppress(OSError):
            sock.close()
    if found is not None:
        return found
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _put_back(address: str, sock: socket.socket) -> None:
    with _idle_lock:
        _idle.setdefault(address, []).append((sock, time.monotonic()))


def _drop_idle(address: str) -> None:
    with _idle_lock:
        for sock, _ in _idle.pop(address, []):
            with contextlib.suppress(OSError):
                sock.close()


Settle = Callable[[], "list[int] | None"]


class _Unknown(Exception):
    """The batch was sent; no reply came (the leader died, or the connection failed)."""


class Relay:
    """One partition log's side of the relay: its lease when it leads, the lease it follows otherwise."""

    def __init__(self, log: PartitionLog, signer: SigningKey, settings: RelaySettings) -> None:
        partition = partition_of(log.prefix)
        assert partition is not None
        self.log = log
        self.signer = signer
        self.settings = settings
        self.mac_key: bytes | None = relay_mac_key(signer)
        self.lease_name = relay_lease(partition, signer.key_id)
        self._lock = threading.Lock()
        self._leading: tuple[Lease, int] | None = None  # our lease and its generation
        self._followed: tuple[Lease, int, float] | None = None  # a leader's lease, its generation, read at
        self._stop = threading.Event()
        self._used = time.monotonic()  # the last append through this relay (a leader idle for a ttl leaves)
        self._acknowledged = 0  # the latest commit a leader said holds one of our batches
        self._seen: dict[int, float] = {}  # a leader's: connection -> when it last relayed a batch
        self._contended_at = -1e9  # when this process last lost a create to another writer
        self._no_lease_until = 0.0  # no lease was found: write directly until then (unless contended)
        _relays.add(self)

    @classmethod
    def for_log(cls, log: PartitionLog) -> Relay | None:
        """The relay of ``log``, or None: off (``TUNE_RELAY=off``), not an events log, or no signing key."""
        settings = RelaySettings.from_env()
        if not settings.enabled or partition_of(log.prefix) is None:
            return None
        signer = log.ledger.signer()  # (published in the keyring by whichever process commits first)
        if signer is None:
            return None
        return cls(log, signer, settings)

    @property
    def leading(self) -> bool:
        return self._leading is not None

    # -- the follower's side ---------------------------------------------------------------------

    def hand_over(self, records: list[EventRecord]) -> tuple[list[int] | None, Settle]:
        """Hand ``records`` to the partition's leader: ``(their ids, _)`` when it committed them; ``(None,
        settle)`` when this process must write them itself (no leader, this process leads, or the leader
        went away with the batch); ``settle()`` then says whether the batch is in the log after all (its
        ids), for a direct write refused with IntegrityError. Raises what the leader's commit raised."""
        self._used = time.monotonic()
        lease = self._leader()
        if lease is None:
            return None, _nothing
        token = os.urandom(12).hex()
        tail = max(self.log.index.tail_seq, self._acknowledged)  # our batch can only be in a later commit
        request = _Request(self.log.bucket.url, self.log.prefix, self.signer.key_id, token, records)
        try:
            reply = self._ask(lease, request)
        except ConnectionRefusedError:
            self._take_over(lease)
            return None, _nothing
        except _Unknown as exc:
            _log.info("relay: no answer from the leader of %s at %s (%s): looking for the batch in the log",
                      self.log.prefix, lease.address, exc)
            self._forget(lease)
            ids = self.find(token, tail, len(records))
            if ids is not None:
                return ids, _nothing
            return None, lambda: self.find(token, tail, len(records))
        if reply.error == "NotLeader":
            self._forget(lease)
            return None, _nothing
        if reply.error:
            raise _ERRORS.get(reply.error, OperationalError)(reply.message)
        self._acknowledged = max(self._acknowledged, reply.seq)
        return reply.ids, _nothing

    def _ask(self, lease: Lease, request: _Request) -> _Reply:
        assert self.mac_key is not None
        try:
            sock = _connect(lease.address, self.settings.ttl_s)
        except ConnectionRefusedError:
            raise
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise ConnectionRefusedError(str(exc)) from exc
            raise _Unknown(f"cannot connect: {exc}") from exc  # nothing sent: not found, written directly
        try:
            _send(sock, self.mac_key, _encoder.encode(request))
            reply = _reply_decoder.decode(_recv(sock, self.mac_key))
        except (OSError, PermissionError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            with contextlib.suppress(OSError):
                sock.close()
            raise _Unknown(str(exc) or type(exc).__name__) from exc
        if reply.token != request.token:
            sock.close()
            raise _Unknown("a reply for another batch")
        _put_back(lease.address, sock)
        return reply

    def find(self, token: str, after: int, count: int) -> list[int] | None:
        """The ids of relayed batch ``token`` of ``count`` events, if a commit after ``after`` holds it."""
        log = self.log
        log.refresh()
        for seq in range(log.index.tail_seq, after, -1):
            try:
                commit = decode_commit(log.bucket.read(commit_name(log.prefix, seq)))
            except (BucketError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise OperationalError(f"cannot look for a relayed batch in {log.prefix}: {exc}") from exc
            offset = relay_tokens(commit.nonce).get(token)
            if offset is not None:
                first = commit.first_id + offset
                return list(range(first, first + count))
        return None

    def linger(self, create_s: float, queue: Sized, queued: threading.Condition) -> None:
        """Before a leader moves the tail: when fewer batches wait in ``queue`` than followers relay to
        it, wait a little (at most half a create, 2 ms) for theirs, which then share the commit
        (``queued``, the queue's condition, is notified as each batch joins it)."""
        if self._leading is None:
            return
        now = time.monotonic()
        for conn in [c for c, at in self._seen.items() if now - at > 1.0]:
            self._seen.pop(conn, None)
        followers = len(self._seen)  # connections that relayed a batch in the last second
        deadline = now + min(create_s / 2, _LINGER_MAX_S)
        with queued:
            while len(queue) < followers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                queued.wait(left)

    def contended(self) -> None:
        """This process just lost a commit's name to another writer (``PartitionLog``): look for a
        leader at the next append, and become it if there is none."""
        self._contended_at = time.monotonic()
        self._no_lease_until = 0.0

    def _leader(self) -> Lease | None:
        """The lease of a live leader other than this process, or None: then this process writes
        directly, and has tried to become the leader if there is none and it met other writers lately.

        A partition one process writes alone costs nothing: no lease is taken before a create is lost
        to another writer, and a lease found absent is not looked for again for a ttl (unless a create
        is lost meanwhile)."""
        if self._leading is not None or self._stop.is_set():
            return None
        now, clock = time.time(), time.monotonic()
        followed = self._followed
        if followed is not None and now < followed[2] + self.settings.ttl_s / 3 and now < followed[0].expires:
            return followed[0]
        if clock < self._no_lease_until:
            return None
        contended = clock - self._contended_at < self.settings.ttl_s
        with self._lock:
            found = self._read_lease(contended)
            if found is _TAKEN_BY_ANOTHER:  # another writer took it just before us: follow it at once
                found = self._read_lease(False)
            return found if isinstance(found, Lease) else None

    def _read_lease(self, contended: bool) -> Lease | object | None:
        """A live lease of another process to follow; else None (we took it, or there is none to take,
        or it cannot be read) or ``_TAKEN_BY_ANOTHER`` (we tried to take it and lost). Needs ``_lock``."""
        now, clock = time.time(), time.monotonic()
        self._followed = None
        stat = None
        try:
            data, stat = self.log.bucket.read_with_stat(self.lease_name)
            lease: Lease | None = _lease_decoder.decode(data)
        except ObjectNotFound:
            lease = None
        except (msgspec.DecodeError, msgspec.ValidationError):
            _log.warning("relay: %s is not a lease: taking it over", self.lease_name)
            lease = None
        except BucketError as exc:
            _log.warning("relay: cannot read %s (%s): writing directly", self.lease_name, exc)
            return None
        if lease is None or lease.expires <= now:
            if not contended:
                self._no_lease_until = clock + self.settings.ttl_s
            elif not self._take(stat.generation if stat is not None else None):
                return _TAKEN_BY_ANOTHER
            return None
        if lease.key_id != self.signer.key_id:  # never: the name holds the key id
            return None
        if lease.pid == os.getpid() and not _SAME_PROCESS:
            return None  # another log of this partition in this process (tests, an audit): race as before
        self._followed = (lease, stat.generation if stat is not None else 0, now)
        return lease

    def _forget(self, lease: Lease) -> None:
        _drop_idle(lease.address)
        self._followed = None

    def _take_over(self, lease: Lease) -> None:
        """The leader's port refuses connections (its process is gone): take its lease now, if still that."""
        _drop_idle(lease.address)
        with self._lock:
            followed, self._followed = self._followed, None
            if followed is not None and followed[0] == lease:
                self._take(followed[1])

    # -- the leader's side -----------------------------------------------------------------------

    def _lease(self, server: _Server) -> tuple[Lease, bytes]:
        lease = Lease(server.address, os.getpid(), self.signer.key_id,
                      time.time() + self.settings.ttl_s, os.urandom(8).hex())
        return lease, msgspec.json.encode(lease)

    def _take(self, generation: int | None) -> bool:
        """Try to become the leader: create the lease (``generation`` None) or replace the one of that
        generation (expired, or its leader gone): whether we did not lose it (losing is fine: the winner
        leads). Needs ``_lock``."""
        server = _the_server(self.settings.host)
        lease, data = self._lease(server)
        with server.lock:  # batches may arrive as soon as the lease is written (refused until we lead)
            server.relays[(self.log.bucket.url, self.log.prefix, self.signer.key_id)] = self
        try:
            if generation is None:
                stat = self.log.bucket.create(self.lease_name, data)
            else:
                stat = self.log.bucket.write(self.lease_name, data, if_generation_match=generation)
        except (AlreadyExists, PreconditionFailed, ObjectNotFound):
            return False
        except BucketError as exc:
            _log.warning("relay: cannot write %s (%s): writing directly", self.lease_name, exc)
            return True  # (nothing to follow either)
        self._leading = (lease, stat.generation)
        _log.info("relay: this process (%s) leads the writers of %s", server.address, self.log.prefix)
        threading.Thread(target=self._renew, args=(server,), name="relay-lease", daemon=True).start()
        return True

    def _renew(self, server: _Server) -> None:
        while not self._stop.wait(self.settings.ttl_s / 3):
            with self._lock:
                held = self._leading
                if held is None:
                    return
                if time.monotonic() - self._used > self.settings.ttl_s:  # idle: leave (no renewals)
                    self._release(held)
                    return
                lease, data = self._lease(server)
                try:
                    stat = self.log.bucket.write(self.lease_name, data, if_generation_match=held[1])
                except (PreconditionFailed, ObjectNotFound):
                    _log.warning("relay: lost the lease of %s: no longer its leader", self.log.prefix)
                    self._leading = None
                    return
                except Exception as exc:  # a bucket that fails: try again until the lease is nearly out
                    if time.time() >= held[0].expires - self.settings.ttl_s / 6:
                        _log.warning("relay: cannot renew %s (%s): no longer its leader",
                                     self.lease_name, exc)
                        self._leading = None
                        return
                    continue
                self._leading = (lease, stat.generation)

    def release(self) -> None:
        """Stop leading (on exit): the lease is written expired, so the next writer takes it at once."""
        self._stop.set()
        with self._lock:
            if self._leading is not None:
                self._release(self._leading)

    def _release(self, held: tuple[Lease, int]) -> None:
        """Write our lease expired (generation-matched): the next writer takes it at once. Needs ``_lock``."""
        lease = msgspec.structs.replace(held[0], expires=0.0)
        try:
            self.log.bucket.write(self.lease_name, msgspec.json.encode(lease), if_generation_match=held[1])
        except Exception as exc:  # it expires by itself
            _log.info("relay: could not release %s: %s", self.lease_name, exc)
        finally:
            self._leading = None  # (after the write: whoever sees us stop leading finds the lease free)

    def commit(self, request: _Request, conn: int = 0) -> _Reply:
        """Commit a follower's batch in this process's group commit (the server's connection thread
        ``conn``)."""
        self._seen[conn] = time.monotonic()
        if self._leading is None:
            return _Reply(request.token, error="NotLeader", message="no longer the leader")
        try:
            ids = self.log.append_relayed(request.events, request.token)
        except (IntegrityError, DataError, OperationalError) as exc:
            name = next(n for n, cls in _ERRORS.items() if isinstance(exc, cls))
            return _Reply(request.token, error=name, message=str(exc))
        except Exception as exc:  # the follower must hear of it: it raises OperationalError
            _log.exception("relay: a relayed batch for %s failed", self.log.prefix)
            return _Reply(request.token, error="OperationalError", message=f"{type(exc).__name__}: {exc}")
        self._used = time.monotonic()
        return _Reply(request.token, ids=ids, seq=self.log.index.commit_of(ids[0]) or 0 if ids else 0)


_TAKEN_BY_ANOTHER = object()


def _nothing() -> list[int] | None:
    return None


def release_all(timeout_s: float | None = None) -> None:
    """Give up every lease this process holds (at exit, waiting ``timeout_s`` at most: a bucket that
    does not answer must not hold the exit; the lease then expires by itself)."""
    relays = [relay for relay in list(_relays) if relay.leading]
    if not relays:
        return
    if timeout_s is None:
        for relay in relays:
            relay.release()
        return
    threads = [threading.Thread(target=relay.release, daemon=True) for relay in relays]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _forget_after_fork() -> None:
    """A forked child leads nothing and has no server: the parent's threads are not in it."""
    global _server, _server_lock, _idle_lock, _relays
    if _server is not None:
        with contextlib.suppress(OSError):
            _server.sock.close()
    _server = None
    _server_lock = threading.Lock()
    for pool in _idle.values():
        for sock, _ in pool:
            with contextlib.suppress(OSError):
                sock.close()
    _idle.clear()
    _idle_lock = threading.Lock()
    _relays = weakref.WeakSet()


atexit.register(release_all, _RELEASE_AT_EXIT_S)
os.register_at_fork(after_in_child=_forget_after_fork)
