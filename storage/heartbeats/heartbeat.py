"""The heartbeat message a runner attempt sends every few seconds, its JSON codec and its signature.

Signed heartbeats: anyone who can publish on a transport (a Pub/Sub topic, a runner's stdout)
could otherwise bill any job. So each heartbeat carries ``signature``, the hex HMAC-SHA256 of
its canonical encoding (``canonical_bytes``: ``b"tune.heartbeat.v2\n"`` and the JSON object
of every field but ``signature``, in declaration order, as ``encode_heartbeat`` writes them, so
a NaN loss signs as ``null``, exactly what the ledger decodes) under its attempt's secret::

    platform key    TUNE_HEARTBEAT_KEY, else $TUNE_HOME/heartbeat_key (0600, made on first use);
                    never in the bucket (runtime.settings.heartbeat_key_of)
    attempt secret  hex HMAC-SHA256(platform key, "<user_id>/<job_id>/<attempt>")  (attempt_secret)
    signature       hex HMAC-SHA256(attempt secret, canonical_bytes(heartbeat))    (sign_heartbeat)

The dispatcher derives the secret of each attempt it launches and the launch backend hands it
to that runner alone, in its environment (``runners.backends.base.HEARTBEAT_SECRET_ENV``: not in
run.yaml, which is a bucket object); the runner signs what it sends (``HeartbeatEmitter``). The
ledger derives the secret again from the heartbeat's own user, job and attempt, so no secret is
stored anywhere, and drops unsigned or forged heartbeats before metering (``verify_heartbeat``;
``runners.ledger.worker``). A secret is good for one attempt of one job of one user: a runner
cannot sign for another job, and a signature does not survive a change of any field. Secrets
and signatures never reach a log, a view or an event (``Heartbeat.__repr__`` hides the signature).

Heartbeats from before signatures decode (``signature`` None): the ledger counts and drops them.
``v2`` (``gpu_ms_total``, cumulative) replaced ``v1``'s per-interval ``gpu_ms``: a v1 heartbeat
no longer decodes, and its signature would not verify under the v2 prefix anyway.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Annotated

import msgspec

__all__ = [
    "Heartbeat",
    "attempt_secret",
    "canonical_bytes",
    "decode_heartbeat",
    "encode_heartbeat",
    "sign_heartbeat",
    "verify_heartbeat",
]

_CANONICAL_PREFIX = b"tune.heartbeat.v2\n"

_Count = Annotated[int, msgspec.Meta(ge=0)]


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tick of one runner attempt.

    ``gpu_ms_total`` is the attempt's cumulative GPU time (per GPU, from a monotonic clock)
    since it started: it never decreases, so a lost or late heartbeat loses nothing (the next
    one carries the total) and the final one settles the attempt; the ledger meters the
    increase over what it metered already and multiplies by ``gpu_count``. ``loss`` is a
    metric only, never money. ``final`` marks the attempt's last heartbeat.
    ``(job_id, attempt, seq)`` identifies a heartbeat: transports deliver at
    least once, so consumers drop repeats by that key.
    """

    user_id: str
    job_id: str
    attempt: _Count
    seq: _Count
    gpu_type: str
    gpu_count: _Count
    gpu_ms_total: _Count
    step: _Count
    loss: float | None
    tokens: _Count
    at: Annotated[datetime, msgspec.Meta(tz=True)]
    final: bool = False
    lease: str | None = None
    """The attempt's fencing lease (``Job.Started``): the ledger bills an attempt's heartbeats only
    under the lease its ``Started`` recorded (None: a runner from before leases)."""
    signature: str | None = None
    """Hex HMAC-SHA256 of ``canonical_bytes`` under the attempt's secret (None: unsigned)."""

    def __repr__(self) -> str:  # a signature is a credential's work: never in a log
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__struct_fields__ if n != "signature")
        return f"Heartbeat({fields}, signed={self.signature is not None})"

    @property
    def key(self) -> tuple[str, int, int]:
        """``(job_id, attempt, seq)``: the identity consumers deduplicate by."""
        return (self.job_id, self.attempt, self.seq)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Heartbeat)


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    """JSON bytes of ``heartbeat``."""
    return _encoder.encode(heartbeat)


def decode_heartbeat(data: bytes) -> Heartbeat:
    """The Heartbeat in ``data``; ``msgspec.DecodeError`` (or its ValidationError) if it is not one."""
    return _decoder.decode(data)


def attempt_secret(platform_key: bytes, user_id: str, job_id: str, attempt: int) -> str:
    """The hex secret of one attempt, derived from the platform's heartbeat key (module docstring)."""
    message = f"{user_id}/{job_id}/{attempt}".encode()
    return hmac.new(platform_key, message, hashlib.sha256).hexdigest()


def canonical_bytes(heartbeat: Heartbeat) -> bytes:
    """What a heartbeat's signature covers: every field but ``signature`` (see the module docstring)."""
    fields = msgspec.structs.asdict(heartbeat)
    del fields["signature"]
    return _CANONICAL_PREFIX + _encoder.encode(fields)


def _signature(heartbeat: Heartbeat, secret: str) -> str:
    return hmac.new(secret.encode(), canonical_bytes(heartbeat), hashlib.sha256).hexdigest()


def sign_heartbeat(heartbeat: Heartbeat, secret: str) -> Heartbeat:
    """``heartbeat`` carrying its signature under ``secret`` (its attempt's, ``attempt_secret``)."""
    return msgspec.structs.replace(heartbeat, signature=_signature(heartbeat, secret))


def verify_heartbeat(heartbeat: Heartbeat, secret: str) -> bool:
    """Whether ``heartbeat`` is signed, and signed with ``secret`` over exactly its fields."""
    if heartbeat.signature is None:
        return False
    return hmac.compare_digest(heartbeat.signature, _signature(heartbeat, secret))
