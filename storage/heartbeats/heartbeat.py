"""The heartbeat message a runner attempt sends every few seconds, and its JSON codec."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

__all__ = ["Heartbeat", "decode_heartbeat", "encode_heartbeat"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tick of one runner attempt.

    ``gpu_ms`` is GPU time (per GPU, from a monotonic clock) since the attempt's
    previous heartbeat; the ledger multiplies by ``gpu_count``. ``loss`` is a
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
    gpu_ms: _Count
    step: _Count
    loss: float | None
    tokens: _Count
    at: Annotated[datetime, msgspec.Meta(tz=True)]
    final: bool = False

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
