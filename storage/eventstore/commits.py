"""The commit object: one ``insert_events`` batch, as stored at ``<partition><seq:012d>.json``.

A partition's log is the sequence of commits 1, 2, 3, ... with no gaps. Each
commit holds its events in order (they take the notification ids
``first_id, first_id + 1, ...``), the tracking record of a process recorder
when given, and ``prev_sha256``, the SHA-256 of the previous commit's exact
bytes ("" for commit 1). Commits are written create-only and never change.

A segment (``<partition>segments/<last seq:012d>.json``) packs the exact
bytes of ``SEGMENT_COMMITS`` consecutive commits, one per line (commit JSON
never holds a raw newline), Zstandard-compressed (level 6, one frame with its
content size and checksum: the same commits always pack to the same bytes) so
that the copy costs about a quarter of the commits it repeats (hashes and
signatures do not compress) and inflates five times as fast as gzip did.
Segments written before (gzip streams, or plain lines) still read. Segments are a read cache only: a reader
far behind takes a whole segment in one read, checking each commit's hash link,
and ignores a segment that does not fit (or inflates past ``MAX_SEGMENT_BYTES``);
the commits stay the record.

Event state is kept as text when it is UTF-8 (the JSON the transcoder wrote,
readable in the bucket) and as base64 otherwise (compressed or encrypted
state); either way the bytes come back exactly.

``nonce`` (absent in commits written before it existed, which still read) is
drawn afresh for each ``append``: it makes two writers' commits differ even
when their batches are byte-identical, so a writer that finds its commit's
name taken by identical bytes knows the commit is its own (a create retried
after an ambiguous failure), and any other writer is refused (IntegrityError).

``key_id`` and ``sig`` (absent in commits written before signatures existed, which
still read): the commit signed by its writer's key (``storage.eventstore.signing``), over
the partition prefix, seq, ``prev_sha256`` and the SHA-256 of the commit's body (the commit
encoded without ``sig``): ``sign_commit`` / ``check_signature``.

Errors: ``ChainBroken`` (a ``DataError``): a commit does not link by hash to
the commit before it as this process read it, or the tail is not the commit
that ``metadata/position.json`` anchored; the log is neither served nor
extended past it (see ``storage.eventstore.log``).
"""

from __future__ import annotations

import hashlib
import operator
import re
import zlib
from collections.abc import Iterable
from uuid import UUID

import msgspec
import zstandard
from eventsourcing.persistence import DataError

from storage.eventstore.signing import Keyring, SigningKey, Verdict, commit_message

__all__ = [
    "COMMIT_NAME",
    "MAX_SEGMENT_BYTES",
    "SEGMENT_COMMITS",
    "ChainBroken",
    "Commit",
    "EventRecord",
    "SealedCommit",
    "TrackingRecord",
    "body_sha256",
    "check_signature",
    "commit_name",
    "decode_commit",
    "decode_sealed_segment",
    "decode_segment",
    "encode_commit",
    "event_record",
    "inflate_segment",
    "pack_segment",
    "record_state",
    "segment_name",
    "seq_of",
    "sha256_hex",
    "sha256_hexes",
    "sign_commit",
    "signed_commit",
    "unpack_segment",
]

COMMIT_NAME = re.compile(r"(\d{12})\.json")
"""What a commit's name looks like after the partition prefix."""

SEGMENT_COMMITS = 256
"""Commits per segment; segment k holds commits ``k * SEGMENT_COMMITS + 1 .. (k + 1) * SEGMENT_COMMITS``."""


class EventRecord(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """One stored event of a commit; its aggregate is ``originator_id`` or else ``text_id``."""

    originator_id: UUID | None = None
    text_id: str | None = None
    """The aggregate's id when it is a plain string, not a UUID."""
    originator_version: int
    topic: str
    state: str | None = None
    """The stored state, when it is UTF-8 text."""
    state_b64: bytes | None = None
    """The stored state, when it is not (base64 in the JSON)."""

    def originator(self) -> UUID | str:
        return self.originator_id if self.originator_id is not None else self.text_id or ""


class TrackingRecord(msgspec.Struct, gc=False):
    """The upstream position a process recorder stored with its events."""

    application_name: str
    notification_id: int


class Commit(msgspec.Struct, omit_defaults=True, gc=False):
    """One create-only object of a partition's log."""

    seq: int
    first_id: int
    """Notification id of ``events[0]``; the next commit starts at ``first_id + len(events)``."""
    prev_sha256: str
    events: list[EventRecord] = []
    tracking: TrackingRecord | None = None
    nonce: str = ""
    """Drawn afresh for each append ("" in commits written before it existed)."""
    key_id: str = ""
    """The keyring id of the key that signed it ("" in an unsigned commit)."""
    sig: str = ""
    """Ed25519 signature (base64) over ``signing.commit_message(prefix, seq, prev_sha256, body_sha256)``,
    where ``body_sha256`` hashes the commit encoded with ``sig`` left out (``body_sha256``)."""


class SealedCommit(msgspec.Struct, gc=False):
    """What a reader indexes of a commit in a segment this machine already verified
    (``decode_sealed_segment``): its place and events. Its nonce, key and signature are not decoded
    (the verdict vouches for them), and of the hash links only the first commit's is checked."""

    seq: int
    first_id: int
    prev_sha256: str
    events: list[EventRecord] = []
    tracking: TrackingRecord | None = None


class ChainBroken(DataError):
    """A partition's log does not hold together: it is neither served nor extended past ``seq``.

    ``problem``: ``"edited"`` (commit ``seq``'s bytes are not those the next commit, or position.json,
    recorded), ``"missing"`` (commit ``seq``, which position.json recorded, is gone), ``"inserted"``
    (commit ``seq`` links to a commit other than the one before it), ``"bad signature"`` /
    ``"unknown key"`` (its signature does not verify / its key is in no root-signed keyring entry),
    ``"unsigned"`` (an unsigned commit after a signed one), ``"rolled back"`` (the log ends before
    the head the witness saw) or ``"forged"`` (commit ``seq`` is not the one the witness saw).
    """

    def __init__(self, partition: str, seq: int, problem: str, detail: str) -> None:
        super().__init__(f"{partition}: the chain is broken at commit {seq} ({problem}): {detail}; "
                         "run `tune admin audit` (storage.eventstore.verify_chain)")
        self.partition = partition
        self.seq = seq
        self.problem = problem
        self.detail = detail

    def __reduce__(self) -> tuple[type[ChainBroken], tuple[str, int, str, str]]:
        return type(self), (self.partition, self.seq, self.problem, self.detail)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Commit)


def encode_commit(commit: Commit) -> bytes:
    return _encoder.encode(commit)


def body_sha256(commit: Commit) -> str:
    """The SHA-256 of ``commit`` encoded without its signature: what the signature covers."""
    return sha256_hex(_encoder.encode(msgspec.structs.replace(commit, sig="")))


def sign_commit(prefix: str, commit: Commit, signer: SigningKey) -> Commit:
    """``commit`` with ``signer``'s key id and signature."""
    return signed_commit(prefix, commit, signer)[0]


if Commit.__struct_fields__[-1] != "sig":  # signed_commit appends the signature as the last field
    raise TypeError("Commit.sig must be the last field")


def signed_commit(prefix: str, commit: Commit, signer: SigningKey) -> tuple[Commit, bytes]:
    """``commit`` with ``signer``'s key id and signature, and its bytes (``encode_commit``'s).

    The commit is encoded once: ``sig`` is its last field and is left out of the body the signature
    covers (empty: a default), so the signed commit's bytes are the body's with ``"sig"`` added before
    the closing brace (a 100-event commit's second encoding cost a twentieth of its save's own work)."""
    keyed = msgspec.structs.replace(commit, key_id=signer.key_id, sig="")
    body = _encoder.encode(keyed)
    sig = signer.sign(commit_message(prefix, commit.seq, commit.prev_sha256, sha256_hex(body)))
    data = b"".join((body[:-1], b',"sig":', _encoder.encode(sig), b"}"))
    return msgspec.structs.replace(keyed, sig=sig), data


def check_signature(prefix: str, commit: Commit, keyring: Keyring) -> Verdict:
    """Whether ``commit`` (a signed one) verifies with a key the keyring trusts."""
    message = commit_message(prefix, commit.seq, commit.prev_sha256, body_sha256(commit))
    return keyring.verify(commit.key_id, message, commit.sig)


def decode_commit(data: bytes) -> Commit:
    """Parse a commit's bytes; raise msgspec.ValidationError / DecodeError if they are not one."""
    return _decoder.decode(data)


def event_record(originator_id: UUID | str, version: int, topic: str, state: bytes) -> EventRecord:
    """The record of one stored event (each case spelled out: a save makes one per event, and building
    the keywords as a dict cost three times the record itself)."""
    try:
        text: str | None = state.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if isinstance(originator_id, UUID):
        if text is not None:
            return EventRecord(originator_id=originator_id, originator_version=version, topic=topic,
                               state=text)
        return EventRecord(originator_id=originator_id, originator_version=version, topic=topic,
                           state_b64=bytes(state))
    if not isinstance(originator_id, str):
        raise TypeError(f"an originator id is a UUID or a str, not {type(originator_id).__name__}")
    if text is not None:
        return EventRecord(text_id=originator_id, originator_version=version, topic=topic, state=text)
    return EventRecord(text_id=originator_id, originator_version=version, topic=topic, state_b64=bytes(state))


def record_state(record: EventRecord) -> bytes:
    """The exact state bytes of ``record``."""
    if record.state is not None:
        return record.state.encode("utf-8")
    return record.state_b64 or b""


def commit_name(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:012d}.json"


def seq_of(prefix: str, name: str) -> int | None:
    """The sequence number of a commit named ``name`` directly under ``prefix``, else None."""
    match = COMMIT_NAME.fullmatch(name, len(prefix)) if name.startswith(prefix) else None
    return int(match.group(1)) if match else None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_hexes(datas: Iterable[bytes]) -> list[str]:
    """``sha256_hex`` of each, without a Python call per item (the cold-replay hot path)."""
    return list(map(_hexdigest, map(hashlib.sha256, datas)))


_hexdigest = operator.methodcaller("hexdigest")


def segment_name(prefix: str, last_seq: int) -> str:
    """The segment that ends at commit ``last_seq`` (a multiple of SEGMENT_COMMITS)."""
    return f"{prefix}segments/{last_seq:012d}.json"


MAX_SEGMENT_BYTES = 64 * 1024 * 1024
"""The most a segment's commits may hold (a writer does not seal a larger one; a reader refuses to
inflate one past it)."""

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP = 16 + zlib.MAX_WBITS  # wbits for the gzip container


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_LEVEL = 1
"""Zstandard packs a segment of signed commits smaller than gzip (40 KB against 43 KB for 156 KB of
commits) and inflates it five times as fast (68 against 350 us): inflating was the largest cost a
replay pays on a warm machine that SQLite does not. Level 1 rather than 6: on these commits it packs
as small or smaller (40.2 KB against 41.4 for 148 KB of 1-event commits; 225 KB against 238 for 6.7 MB
of 100-event commits), inflates as fast, and packs 5-6 times as fast (3.7 ms against 22.7 for the
6.7 MB). The save that seals a segment pays for packing it: at level 6, 23 ms for a segment of
100-event commits, 90 us a save over its 256. Segments written at another level read the same."""


def pack_segment(commits: list[bytes]) -> bytes:
    """The commits' exact bytes, one a line, Zstandard-compressed deterministically (one frame with its
    content size and a checksum). Segments written before are gzip streams, or plain."""
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True, write_content_size=True)
    return compressor.compress(b"".join(data + b"\n" for data in commits))


def unpack_segment(data: bytes) -> list[bytes]:
    """The exact bytes of each commit in a segment (compressed, or plain as first written);
    ValueError for a truncated or corrupt stream or one that inflates past ``MAX_SEGMENT_BYTES``."""
    data = inflate_segment(data)
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def inflate_segment(data: bytes, *, verified: bool = False) -> bytes:
    """A segment's commits, a line each: ``data`` inflated, or as it is if it was written plain;
    ValueError as ``unpack_segment``. ``verified``: these bytes are known by their SHA-256 (a verdict,
    ``storage.eventstore.verified``), so the CRC-32 of the gzip trailer, which could only repeat that,
    is not computed (a sixth of inflating); its length is still checked."""
    if data[:4] == _ZSTD_MAGIC:
        return _unzstd(data)
    if data[:2] != _GZIP_MAGIC:
        return data
    if verified and data[2:4] == _GZIP_PLAIN_HEADER:
        return _inflate_deflate(data)
    return _inflate(data)


_MAX_DEFLATE_RATIO = 1032
"""The most deflate inflates a byte to (a run of one byte, a 258-byte match per two bits): a stream of
``n`` bytes inflates to at most ``1032 * n``."""


_GZIP_PLAIN_HEADER = b"\x08\x00"  # deflate, no flags: the header is 10 bytes (what pack_segment writes)


def _inflate_deflate(data: bytes) -> bytes:
    """``_inflate`` of a gzip stream with a plain 10-byte header, its deflate data alone (no CRC-32)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = _bounded(inflater, memoryview(data)[10:])
    trailer = inflater.unused_data  # CRC-32 and the length, mod 2**32
    if not inflater.eof or len(trailer) != 8 or int.from_bytes(trailer[4:], "little") != len(out) % 2**32:
        raise ValueError("a truncated compressed segment, or bytes after its end")
    return out


def _bounded(inflater: zlib._Decompress, data: bytes | memoryview) -> bytes:
    """``data`` inflated, refused past ``MAX_SEGMENT_BYTES`` (ValueError, as for a corrupt stream)."""
    try:
        if len(data) * _MAX_DEFLATE_RATIO <= MAX_SEGMENT_BYTES:  # cannot inflate past it: no bound to keep,
            out = inflater.decompress(data)  # which costs a fifth of the time (the output grown in steps)
        else:
            out = inflater.decompress(data, MAX_SEGMENT_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"a corrupt compressed segment ({exc})") from exc
    if len(out) > MAX_SEGMENT_BYTES or inflater.unconsumed_tail:
        raise ValueError(f"a compressed segment inflates past {MAX_SEGMENT_BYTES} bytes")
    return out


def _unzstd(data: bytes) -> bytes:
    """A Zstandard segment's bytes: one frame that names its size, at most ``MAX_SEGMENT_BYTES``, with
    nothing after it; ValueError otherwise (its checksum is checked as it inflates)."""
    try:
        size = zstandard.frame_content_size(data)
        if size < 0 or size > MAX_SEGMENT_BYTES:  # -1: not said; refused before anything is allocated
            raise ValueError(f"a compressed segment not saying its size or over {MAX_SEGMENT_BYTES} bytes")
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ValueError(f"a corrupt, truncated or overlong compressed segment ({exc})") from exc
    if len(out) != size:
        raise ValueError("a truncated compressed segment")
    return out


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(_GZIP)
    out = _bounded(inflater, data)
    if not inflater.eof or inflater.unused_data:
        raise ValueError("a truncated compressed segment, or bytes after its end")
    return out


_sealed_decoder = msgspec.json.Decoder(SealedCommit)


def decode_sealed_segment(lines: bytes) -> list[SealedCommit]:
    """The commits of a segment whose bytes were verified before (``storage.eventstore.verified``), from
    its lines (``inflate_segment``), decoded in one call, neither split nor hashed (ValueError if
    malformed)."""
    return _sealed_decoder.decode_lines(lines)


def decode_segment(data: bytes) -> tuple[list[bytes], list[Commit]]:
    """The exact bytes and the parsed commit of each line of a segment (ValueError if malformed)."""
    lines = unpack_segment(data)
    return lines, [_decoder.decode(line) for line in lines]  # faster than decode_lines (msgspec 0.22)
