"""The log index: what a partition's log holds up to a commit, without its events, for a warm start.

``<partition>indexes/<seq:012d>.json`` (``index_name``), written by a writer when it passes a segment
boundary and the log has grown by an eighth since the latest index it knows (``log.INDEX_SPACING``):
the aggregates' versions and positions (notification ids), the number of events of each commit, the
last tracking id per upstream application, the SHA-256 of every segment's last commit (``boundaries``)
and of commit ``seq``, the first signed commit, and the writer's signature over all of it
(``sign_index`` / ``check_index``). The latest two are kept.

What a restarted process loads, and when (``storage.eventstore.log``):

* on its first look at the log: the latest index that verifies (one list, one read, one signature),
  then the commits after ``seq`` (whole segments, an eighth of the log at most, then the tail: each
  verified as always). A write can then check versions and tracking ids and link to the tail at once;
* when a query needs events before ``seq`` (an aggregate loaded, notifications paged through): the
  segments holding them, one at a time, each checked by hash from the boundary before it to the
  boundary it ends at and by signature, exactly as a segment read in a full replay.

An index is trusted only when its signature verifies with a key the root vouches for, so without
a keyring (no root public key known here) it is never used (the log replays the partition as
before). It pins the hashes of every segment, so a commit changed later is refused when its segment
is paged in; what it says of versions is the writer's word, as the commit objects are.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from storage.eventstore.signing import Keyring, SigningKey, Verdict

__all__ = [
    "Aggregate",
    "LogIndex",
    "TextAggregate",
    "check_index",
    "decode_index",
    "encode_index",
    "index_message",
    "index_name",
    "indexes_prefix",
    "sign_index",
]


class Aggregate(msgspec.Struct, array_like=True, gc=False):
    """One aggregate: its versions (empty when they are exactly 1..len(positions)) and the position
    (notification id - 1) of each version's event."""

    id: UUID
    positions: list[int]
    versions: list[int] = []


class TextAggregate(msgspec.Struct, array_like=True, gc=False):
    """An aggregate whose id is a plain string."""

    id: str
    positions: list[int]
    versions: list[int] = []


class LogIndex(msgspec.Struct, kw_only=True, omit_defaults=True):
    seq: int
    """The last commit it covers (a multiple of ``commits.SEGMENT_COMMITS``)."""
    sha256: str
    """Of commit ``seq``'s bytes."""
    boundaries: list[str]
    """The SHA-256 of commit ``k * SEGMENT_COMMITS`` for k = 1, 2, ... up to ``seq``."""
    commit_events: list[int]
    """How many events each commit 1..seq holds."""
    aggregates: list[Aggregate] = []
    text_aggregates: list[TextAggregate] = []
    tracking: dict[str, int] = {}
    signed_from: int | None = None
    """The first signed commit (an unsigned commit after it is forged)."""
    key_id: str = ""
    sig: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LogIndex)


def indexes_prefix(prefix: str) -> str:
    return f"{prefix}indexes/"


def index_name(prefix: str, seq: int) -> str:
    return f"{indexes_prefix(prefix)}{seq:012d}.json"


def encode_index(index: LogIndex) -> bytes:
    return _encoder.encode(index)


def decode_index(data: bytes) -> LogIndex:
    """ValueError (msgspec's errors are ValueErrors) if ``data`` is no log index."""
    return _decoder.decode(data)


def index_message(prefix: str, index: LogIndex) -> bytes:
    """What the signature covers: the partition, the commit and the SHA-256 of the unsigned body."""
    import hashlib

    body = _encoder.encode(msgspec.structs.replace(index, key_id=index.key_id, sig=""))
    return f"tune-log-index-v1\n{prefix}\n{index.seq}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign_index(prefix: str, index: LogIndex, signer: SigningKey) -> LogIndex:
    keyed = msgspec.structs.replace(index, key_id=signer.key_id, sig="")
    return msgspec.structs.replace(keyed, sig=signer.sign(index_message(prefix, keyed)))


def check_index(prefix: str, index: LogIndex, keyring: Keyring) -> Verdict:
    if not index.sig:
        return "unknown key"
    return keyring.verify(index.key_id, index_message(prefix, index), index.sig)
