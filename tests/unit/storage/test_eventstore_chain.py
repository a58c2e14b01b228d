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

    assert (report.ok, report.problem, report.first_bad_seq, report.commits) == (False, "edited", 3, 5)
    assert "commit 3 was changed" in report.message


def test_a_commit_that_is_no_longer_json_is_invalid_and_the_rest_is_still_checked() -> None:
    bucket = MemoryBucket()
    write_log(bucket)
    bucket.write(commit_name(PREFIX, 2), b"not json")
    bucket.write(commit_name(PREFIX, 4), b'["json, not a commit"]')

    report = verify_chain(bucket, PREFIX)

    assert [(p.problem, p.seq) for p in report.problems] == [("invalid", 2), ("invalid", 4)]
    assert "not valid JSON" in report.problems[0].message
    assert "not a commit object" in report.problems[1].message


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


def test_a_stray_object_in_the_partition_is_named() -> None:
    bucket = MemoryBucket()
    write_log(bucket, 3)
    bucket.create(f"{PREFIX}000000000002.json.bak", b"{}")
    bucket.create(f"{PREFIX}segments/junk", b"{}")
    bucket.create(f"{PREFIX}snapshots/000000000001.json", b"{}")

    report = verify_chain(bucket, PREFIX, stray=lambda name: "junk" in name)

    assert (report.ok, report.problem, report.first_bad_seq) == (False, "stray", None)
    assert [p.name for p in report.problems] == [f"{PREFIX}000000000002.json.bak", f"{PREFIX}segments/junk"]


def test_a_commit_copied_over_another_is_out_of_place_and_nothing_after_it_is_blamed() -> None:
    bucket = MemoryBucket()
    write_log(bucket, 5)
    bucket.write(commit_name(PREFIX, 3), bucket.read(commit_name(PREFIX, 1)))

    report = verify_chain(bucket, PREFIX)

    assert [(p.problem, p.seq) for p in report.problems] == [("out of place", 3)]
    assert "holds commit 1" in report.message


def test_every_problem_is_named_not_only_the_first() -> None:
    bucket = MemoryBucket()
    write_log(bucket, 8)
    bucket.write(commit_name(PREFIX, 2), b"[")
    bucket.delete(commit_name(PREFIX, 5))
    name = commit_name(PREFIX, 6)
    bucket.write(name, bucket.read(name).replace(b'{\\"i\\":5}', b'{\\"i\\":0}'))

    report = verify_chain(bucket, PREFIX)

    assert [(p.problem, p.seq) for p in report.problems] == [("invalid", 2), ("missing", 5), ("edited", 6)]
    assert report.commits == 8


def _forge_last(bucket: Bucket) -> tuple[int, str]:
    """Append commit 6 with a link to nothing; return commit 5 and its hash (what position.json holds)."""
    last = decode_commit(bucket.read(commit_name(PREFIX, 5)))
    bucket.create(commit_name(PREFIX, 6), encode_commit(Commit(6, last.first_id + 1, "0" * 64, last.events)))
    return 5, sha256_hex(bucket.read(commit_name(PREFIX, 5)))


def test_a_forged_last_commit_is_named_inserted_when_its_predecessor_is_known_intact() -> None:
    bucket = MemoryBucket()
    write_log(bucket, 5)
    anchor = _forge_last(bucket)

    alone = verify_chain(bucket, PREFIX)
    assert (alone.problem, alone.first_bad_seq) == ("edited", 5)
    assert "or commit 6 was written with a wrong link" in alone.message  # the chain alone cannot tell

    report = verify_chain(bucket, PREFIX, anchor=anchor)
    assert (report.problem, report.first_bad_seq) == ("inserted", 6)
    assert "commit 6 was forged" in report.message
