"""verify_chain names the commit that was changed, removed or inserted."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import StoredEvent

from storage import Bucket
from storage.eventstore import ChainReport, verify_chain
from storage.eventstore.commits import Commit, commit_name, decode_commit, encode_commit, sha256_hex
from storage.eventstore.log import PartitionLog
from storage.memory import MemoryBucket

PREFIX = "platform/events/"


def write_log(bucket: Bucket, commits: int = 5) -> None:
    log = PartitionLog(bucket, PREFIX)
    for i in range(commits):
        log.append([StoredEvent(uuid.uuid4(), 1, "tests:Thing.Happened", f'{{"i":{i}}}'.encode())])


def test_an_untouched_log_is_intact(bucket: Bucket) -> None:
    write_log(bucket)
    PartitionLog(bucket, f"{PREFIX}snapshots/").append([StoredEvent("x", 1, "t", b"{}")])  # not part of it

    report = verify_chain(bucket, PREFIX)

    assert report == ChainReport(True, 5, None, None, f"{PREFIX}: 5 commits, chain intact")


def test_an_empty_partition_is_intact() -> None:
    assert verify_chain(MemoryBucket(), PREFIX).ok


def test_an_edited_commit_is_named(bucket: Bucket) -> None:
    write_log(bucket)
    name = commit_name(PREFIX, 3)
    bucket.write(name, bucket.read(name).replace(b'{\\"i\\":2}', b'{\\"i\\":9}'))

    report = verify_chain(bucket, PREFIX)

    assert (report.ok, report.problem, report.first_bad_seq, report.commits) == (False, "edited", 3, 2)
    assert "commit 3 was changed" in report.message


def test_a_commit_that_is_no_longer_json_is_edited() -> None:
    bucket = MemoryBucket()
    write_log(bucket)
    bucket.write(commit_name(PREFIX, 2), b"not json")

    report = verify_chain(bucket, PREFIX)

    assert (report.problem, report.first_bad_seq) == ("edited", 2)


def test_a_removed_commit_is_named(bucket: Bucket) -> None:
    write_log(bucket)
    bucket.delete(commit_name(PREFIX, 2))

    report = verify_chain(bucket, PREFIX)

    assert (report.ok, report.problem, report.first_bad_seq) == (False, "missing", 2)
    assert commit_name("", 2) in report.message


def test_a_removed_commit_hidden_by_renaming_is_named() -> None:
    bucket = MemoryBucket()
    write_log(bucket)
    for seq in (3, 4, 5):  # remove 2, shift the rest down
        bucket.write(commit_name(PREFIX, seq - 1), bucket.read(commit_name(PREFIX, seq)))
    bucket.delete(commit_name(PREFIX, 5))

    report = verify_chain(bucket, PREFIX)

    assert (report.problem, report.first_bad_seq) == ("missing", 2)


@pytest.mark.parametrize("rewrite_seq", [False, True], ids=["renamed", "renamed-and-renumbered"])
def test_an_inserted_commit_is_named(rewrite_seq: bool) -> None:
    bucket = MemoryBucket()
    write_log(bucket, 4)
    originals = {seq: bucket.read(commit_name(PREFIX, seq)) for seq in (1, 2, 3, 4)}
    forged = Commit(2, 2, sha256_hex(originals[1]), decode_commit(originals[2]).events)
    for seq in (4, 3, 2):  # shift 2..4 up by one and put the forged commit at 2
        data = originals[seq]
        if rewrite_seq:
            commit = decode_commit(data)
            data = encode_commit(Commit(seq + 1, commit.first_id + 1, commit.prev_sha256, commit.events))
        bucket.write(commit_name(PREFIX, seq + 1), data)
    bucket.write(commit_name(PREFIX, 2), encode_commit(forged))

    report = verify_chain(bucket, PREFIX)

    assert (report.ok, report.problem, report.first_bad_seq) == (False, "inserted", 2)


def test_a_stray_object_in_the_partition_is_inserted() -> None:
    bucket = MemoryBucket()
    write_log(bucket, 3)
    bucket.create(f"{PREFIX}000000000002.json.bak", b"{}")

    report = verify_chain(bucket, PREFIX)

    assert (report.ok, report.problem, report.first_bad_seq) == (False, "inserted", 3)
    assert "000000000002.json.bak" in report.message
