"""A signed commit's bytes, made with one encoding (``signed_commit``), are exactly what encoding the
signed commit gives, and its signature verifies: whatever the events, ids, states and tracking hold."""

from __future__ import annotations

import base64
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.eventstore.commits import (
    Commit,
    TrackingRecord,
    body_sha256,
    decode_commit,
    encode_commit,
    event_record,
    signed_commit,
)
from storage.eventstore.signing import SigningKey, commit_message

PREFIX = "users/u1/events/"
KEY = SigningKey.generate("api")

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
records = st.builds(
    event_record,
    st.one_of(st.uuids(), text),
    st.integers(min_value=1, max_value=2**40),
    text,
    st.one_of(text.map(str.encode), st.binary(max_size=12)),  # UTF-8 text, or bytes kept as base64
)
commits = st.builds(
    Commit,
    seq=st.integers(min_value=1, max_value=10**9),
    first_id=st.integers(min_value=1, max_value=10**12),
    prev_sha256=st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(bytes.hex)),
    events=st.lists(records, max_size=5),
    tracking=st.one_of(st.none(), st.builds(TrackingRecord, text, st.integers(min_value=0))),
    nonce=text,
)


@settings(max_examples=300, deadline=None)
@given(commits)
def test_a_signed_commit_s_bytes_are_its_encoding_and_its_signature_verifies(commit: Commit) -> None:
    signed, data = signed_commit(PREFIX, commit, KEY)

    assert data == encode_commit(signed)
    assert decode_commit(data) == signed
    assert signed.key_id == KEY.key_id and signed.events == commit.events
    message = commit_message(PREFIX, commit.seq, commit.prev_sha256, body_sha256(signed))
    KEY.public.verify(base64.b64decode(signed.sig), message)  # raises InvalidSignature if not


def test_event_record_keeps_the_id_kind_and_the_state_bytes() -> None:
    thing = uuid.uuid4()
    by_uuid = event_record(thing, 2, "t", b'{"a":1}')
    by_text = event_record("user-1", 3, "t", b"\xff\x00")
    assert (by_uuid.originator_id, by_uuid.text_id, by_uuid.state) == (thing, None, '{"a":1}')
    assert (by_text.originator_id, by_text.text_id, by_text.state, by_text.state_b64) == \
        (None, "user-1", None, b"\xff\x00")
