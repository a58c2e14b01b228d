"""Signed heartbeats: what a signature covers, and that it survives both transports' encoding."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from storage.heartbeats import (
    Heartbeat,
    attempt_secret,
    canonical_bytes,
    decode_heartbeat,
    encode_heartbeat,
    sign_heartbeat,
    verify_heartbeat,
)

KEY = b"platform-key"
SECRET = attempt_secret(KEY, "u1", "j1", 1)


def heartbeat(**fields: object) -> Heartbeat:
    values: dict[str, object] = dict(
        user_id="u1", job_id="j1", attempt=1, seq=3, gpu_type="a100-80gb", gpu_count=1, gpu_ms_total=10_000,
        step=7, loss=0.5, tokens=900, at=datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC),
    )  # fmt: skip
    return Heartbeat(**(values | fields))  # type: ignore[arg-type]


def test_a_signed_heartbeat_verifies_after_an_encoding_round_trip() -> None:
    signed = sign_heartbeat(heartbeat(), SECRET)
    assert signed.signature is not None and len(signed.signature) == 64
    assert verify_heartbeat(signed, SECRET)
    assert verify_heartbeat(decode_heartbeat(encode_heartbeat(signed)), SECRET)


@pytest.mark.parametrize(
    "loss, at",
    [
        (math.nan, datetime(2026, 3, 10, 12, tzinfo=UTC)),  # NaN is written as null and read as None
        (math.inf, datetime(2026, 3, 10, 12, tzinfo=UTC)),
        (1e-300, datetime(2026, 3, 10, 14, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_a_signature_survives_what_the_encoding_normalises(loss: float, at: datetime) -> None:
    signed = sign_heartbeat(heartbeat(loss=loss, at=at), SECRET)
    assert verify_heartbeat(decode_heartbeat(encode_heartbeat(signed)), SECRET)


@pytest.mark.parametrize(
    "field, value",
    [
        ("user_id", "u2"), ("job_id", "j2"), ("attempt", 2), ("seq", 4), ("gpu_type", "h200"),
        ("gpu_count", 16), ("gpu_ms_total", 10_001), ("step", 8), ("loss", 0.25), ("tokens", 901),
        ("at", datetime(2026, 4, 10, tzinfo=UTC)), ("final", True),
    ],
)  # fmt: skip
def test_changing_any_field_breaks_the_signature(field: str, value: object) -> None:
    forged = msgspec.structs.replace(sign_heartbeat(heartbeat(), SECRET), **{field: value})
    assert not verify_heartbeat(forged, SECRET)


def test_a_wrong_secret_or_no_signature_does_not_verify() -> None:
    wrong_key = attempt_secret(b"other-key", "u1", "j1", 1)
    assert not verify_heartbeat(sign_heartbeat(heartbeat(), wrong_key), SECRET)
    assert not verify_heartbeat(sign_heartbeat(heartbeat(), attempt_secret(KEY, "u1", "j1", 2)), SECRET)
    assert not verify_heartbeat(heartbeat(), SECRET)
    assert not verify_heartbeat(heartbeat(signature="0" * 64), SECRET)


def test_attempt_secrets_differ_per_user_job_and_attempt() -> None:
    ids = [("u1", "j1", 1), ("u1", "j1", 2), ("u1", "j2", 1), ("u2", "j1", 1), ("u1/j1", "1", 1)]
    assert len({attempt_secret(KEY, *i) for i in ids}) == len(ids)
    assert attempt_secret(KEY, "u1", "j1", 1) == SECRET  # derived again, never stored


def test_an_unsigned_heartbeat_still_decodes_but_one_with_per_interval_gpu_ms_does_not() -> None:
    unsigned = (
        b'{"user_id":"u1","job_id":"j1","attempt":1,"seq":3,"gpu_type":"cpu","gpu_count":1,"gpu_ms_total":5,'
        b'"step":1,"loss":null,"tokens":0,"at":"2026-03-10T12:00:00Z","final":false}'
    )
    assert decode_heartbeat(unsigned).signature is None
    old = unsigned.replace(b'"gpu_ms_total"', b'"gpu_ms"')  # v1: a delta the ledger can no longer meter
    with pytest.raises(msgspec.ValidationError):
        decode_heartbeat(old)


def test_the_canonical_bytes_are_those_of_v2_cumulative_heartbeats() -> None:
    assert canonical_bytes(heartbeat()).startswith(b"tune.heartbeat.v2\n{")
    assert b'"gpu_ms_total":10000' in canonical_bytes(heartbeat())


def test_the_signature_stays_out_of_a_heartbeats_repr() -> None:
    signed = sign_heartbeat(heartbeat(), SECRET)
    assert signed.signature is not None
    assert signed.signature not in repr(signed) and SECRET not in repr(signed)
    assert "signed=True" in repr(signed)
