"""Audit and rebuild on the real event store: tampered commits and tampered views are named."""

from __future__ import annotations

import pytest

from projections.audit import AuditReport, audit_bucket, audit_partition, first_difference, rebuild_partition
from projections.render import decode
from projections.replay import apps_on
from storage import LocalBucket
from storage.eventstore import verify_chain
from storage.eventstore.commits import Commit, decode_commit, encode_commit
from storage.layout import PLATFORM

U1 = "users/u1"
EVENTS = "users/u1/events/"


def _fresh(bucket: LocalBucket) -> LocalBucket:
    """A new bucket object on the same folder: no cache of the log survives the tampering."""
    return LocalBucket(bucket.root)


def test_a_clean_partition_passes(projected: LocalBucket) -> None:
    for partition in (PLATFORM, U1):
        report = audit_partition(projected, partition, apps_on(projected))
        assert report.ok, report
        assert report.chain.ok and report.head > 0 and report.differences == []


def test_tampered_removed_stray_and_broken_views_are_each_named(projected: LocalBucket) -> None:
    status = "users/u1/jobs/j2/status.json"
    projected.write(status, projected.read(status).replace(b'"status":"running"', b'"status":"succeeded"'))
    projected.delete("users/u1/metadata/models.json")
    projected.write("users/u1/jobs/ghost/status.json", b'{"position":3,"status":"running"}')
    projected.write("users/u1/data/d0/metadata.json", b"not json")
    projected.write("users/u1/jobs/j1/config.yml", b"not a view: never reported")

    report = audit_partition(projected, U1, apps_on(projected))
    assert not report.ok and report.chain.ok
    found = {(d.name, d.problem, d.path) for d in report.differences}
    assert found == {
        (status, "differs", "$.status"),
        ("users/u1/metadata/models.json", "missing", None),
        ("users/u1/jobs/ghost/status.json", "unexpected", None),
        ("users/u1/data/d0/metadata.json", "invalid", "$"),
    }
    ghost = next(d for d in report.differences if d.problem == "unexpected")
    assert ghost.stored_position == 3


def test_a_forged_position_is_reported(projected: LocalBucket) -> None:
    name = "users/u1/metadata/jobs.json"
    projected.write(name, projected.read(name).replace(b'{"position":', b'{"position":9', 1))
    (difference,) = audit_partition(projected, U1, apps_on(projected)).differences
    assert (difference.name, difference.path) == (name, "$.position")
    assert (
        difference.stored_position is not None and difference.stored_position > difference.replayed_position
    )  # type: ignore[operator]


def test_rebuild_restores_every_view_and_removes_strays(projected: LocalBucket) -> None:
    status = "users/u1/jobs/j2/status.json"
    original = projected.read(status)
    projected.write(status, original.replace(b'"cost_usd_micros":', b'"cost_usd_micros":1'))
    projected.delete("users/u1/metadata/billing.json")
    projected.write("users/u1/models/fake/metadata.json", b"{}")
    report = rebuild_partition(projected, U1, apps_on(projected))
    assert report.written == ["users/u1/metadata/billing.json", status]  # a job after what it names
    assert report.deleted == ["users/u1/models/fake/metadata.json"]
    assert projected.read(status) == original
    assert audit_partition(projected, U1, apps_on(projected)).ok
    again = rebuild_partition(projected, U1, apps_on(projected))
    assert again.written == [] and again.deleted == [] and again.unchanged > 5


def test_platform_audit_covers_each_users_copies(projected: LocalBucket) -> None:
    projected.delete("users/u1/metadata/gpu_pricing.json")
    projected.write("users/ghost/metadata/user_info.json", b'{"position":1}')
    shallow = audit_partition(projected, PLATFORM, apps_on(projected))
    assert [(d.name, d.problem) for d in shallow.differences] == [
        ("users/u1/metadata/gpu_pricing.json", "missing")
    ]
    deep = audit_partition(projected, PLATFORM, apps_on(projected), deep=True)
    assert ("users/ghost/metadata/user_info.json", "unexpected") in {
        (d.name, d.problem) for d in deep.differences
    }
    only_u2 = audit_partition(
        projected, PLATFORM, apps_on(projected), scope=lambda n: not n.startswith("users/u1/")
    )
    assert only_u2.ok


def _commit(seq: int) -> str:
    return f"{EVENTS}{seq:012d}.json"


def test_an_edited_commit_is_named_and_its_effect_on_the_views_shown(projected: LocalBucket) -> None:
    data = projected.read(_commit(6))  # j1's usage: ten minutes
    assert b'\\"gpu_ms\\":600000' in data
    projected.write(_commit(6), data.replace(b'\\"gpu_ms\\":600000', b'\\"gpu_ms\\":900000'))
    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))
    assert not report.ok
    assert (report.chain.problem, report.chain.first_bad_seq) == ("bad signature", 6)  # signed: its own
    changed = {d.name: d.path for d in report.differences}
    assert changed["users/u1/jobs/j1/status.json"] == "$.cost"


def test_a_removed_commit_is_named(projected: LocalBucket) -> None:
    projected.delete(_commit(4))
    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))
    assert not report.ok
    assert (report.chain.problem, report.chain.first_bad_seq) == ("missing", 4)


def test_an_inserted_commit_is_named(projected: LocalBucket) -> None:
    names = sorted(n for n in projected.list(EVENTS) if "/" not in n[len(EVENTS) :])
    for seq in range(len(names), 2, -1):  # make room at 3: shift 3.. up by one, then insert a copy of 2
        projected.write(_commit(seq + 1), projected.read(_commit(seq)))
    projected.write(_commit(3), projected.read(_commit(2)))
    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))
    assert not report.ok
    assert (report.chain.problem, report.chain.first_bad_seq) == ("inserted", 2)


def _last_seq(bucket: LocalBucket) -> int:
    return len([n for n in bucket.list(EVENTS) if "/" not in n[len(EVENTS) :]])


def test_an_edited_last_commit_is_named_by_the_commit_position_json_was_made_from(
    projected: LocalBucket,
) -> None:
    last = _last_seq(projected)
    stored = decode(projected.read("users/u1/metadata/position.json"))
    assert stored["commit"] == last and len(stored["commit_sha256"]) == 64
    data = projected.read(_commit(last))
    assert b"T09:11:00+00:00" in data  # the time of its last event
    projected.write(_commit(last), data.replace(b"T09:11:00+00:00", b"T09:11:30+00:00"))

    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))

    assert not report.ok
    assert (report.chain.problem, report.chain.first_bad_seq) == ("bad signature", last)  # its signature
    assert verify_chain(_fresh(projected), EVENTS).ok  # what the hash chain alone cannot see


def test_a_removed_tail_is_named(projected: LocalBucket) -> None:
    last = _last_seq(projected)
    projected.delete(_commit(last))
    projected.delete(_commit(last - 1))

    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))

    assert not report.ok
    assert (report.chain.problem, report.chain.first_bad_seq) == ("missing", last - 1)
    assert f"commits {last - 1}-{last} are gone" in report.chain.message


def test_a_stray_object_in_the_log_is_named(projected: LocalBucket) -> None:
    projected.write(f"{EVENTS}extra.json", b"{}")
    projected.write(f"{EVENTS}segments/notes.txt", b"hi")
    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))
    assert report.chain.problem == "stray" and "extra.json" in report.chain.message
    assert [p.name for p in report.chain.problems] == [f"{EVENTS}extra.json", f"{EVENTS}segments/notes.txt"]
    assert report.replay_error is None and report.differences == []  # the log itself still replays


def _platform_commit(seq: int) -> str:
    return f"platform/events/{seq:012d}.json"


def _problems(reports: list[AuditReport]) -> dict[str, list[tuple[str, int | None]]]:
    return {r.partition: [(p.problem, p.seq) for p in r.chain.problems] for r in reports}


def test_a_platform_commit_that_is_not_json_leaves_every_user_audited(projected: LocalBucket) -> None:
    data = projected.read(_platform_commit(1))
    projected.write(_platform_commit(1), b"[" + data[1:])  # the D2 repro: its first { made a [

    reports = audit_bucket(_fresh(projected), open_app=apps_on(_fresh(projected)))

    assert [r.partition for r in reports] == [PLATFORM, U1]
    platform, user = reports
    assert _problems(reports)[PLATFORM] == [("invalid", 1)]
    assert "platform/events/000000000001.json is not valid JSON" in platform.chain.message
    assert platform.replay_error is not None and not platform.ok
    assert user.ok, user  # found in the bucket, not in the platform log, and audited in full


def test_a_platform_commit_out_of_place_leaves_every_user_audited(projected: LocalBucket) -> None:
    projected.write(_platform_commit(2), projected.read(_platform_commit(1)))

    reports = audit_bucket(_fresh(projected), open_app=apps_on(_fresh(projected)))

    assert _problems(reports) == {PLATFORM: [("out of place", 2)], U1: []}
    assert "holds commit 1" in reports[0].chain.message
    assert reports[1].ok


def test_an_invalid_user_commit_leaves_the_platform_audited(projected: LocalBucket) -> None:
    projected.write(_commit(3), b"not json")

    platform, user = audit_bucket(_fresh(projected), open_app=apps_on(_fresh(projected)))

    assert platform.ok
    assert [(p.problem, p.seq) for p in user.chain.problems] == [("invalid", 3)]
    assert user.replay_error is not None


def test_a_user_the_platform_log_does_not_register_is_still_audited(projected: LocalBucket) -> None:
    projected.write("users/u9/events/000000000001.json", b"{}")  # a partition no registration explains
    projected.write("users/u1/jobs/j1/checkpoints/1/x.bin", b"0")

    reports = audit_bucket(_fresh(projected), open_app=apps_on(_fresh(projected)))

    assert [r.partition for r in reports] == [PLATFORM, U1, "users/u9"]
    assert _problems(reports)["users/u9"] == [("invalid", 1)]


def test_a_forged_last_commit_is_named_inserted_not_its_predecessor_changed(projected: LocalBucket) -> None:
    last = _last_seq(projected)
    commit = decode_commit(projected.read(_commit(last)))
    forged = Commit(last + 1, commit.first_id + len(commit.events), "0" * 64, commit.events)
    projected.create(_commit(last + 1), encode_commit(forged))

    report = audit_partition(_fresh(projected), U1, apps_on(_fresh(projected)))

    assert (report.chain.problem, report.chain.first_bad_seq) == ("unsigned", last + 1)  # written with no key
    assert [p.seq for p in report.chain.problems] == [last + 1]  # its predecessor is not blamed


def test_first_difference_paths() -> None:
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "$.a[1].b"
    assert first_difference({"a": [1]}, {"a": [1, 2]}) == "$.a[1]"
    assert first_difference({"a": 1}, {"b": 1}) == "$.a"
    assert first_difference({"x": 1.0}, {"x": 1}) == "$.x"
    assert first_difference({"a": [1]}, {"a": [1]}) is None


def test_rebuild_leaves_a_broken_partition_untouched_and_rebuilds_the_others(projected: LocalBucket) -> None:
    """Issue 12: the views of a partition whose log was edited are never rebuilt from it; the platform
    partition is rebuilt all the same, and the problem is named by commit."""
    from projections.audit import problem_lines, rebuild_bucket

    data = projected.read(_commit(6))
    projected.write(_commit(6), data.replace(b'\\"gpu_ms\\":600000', b'\\"gpu_ms\\":900000'))
    status = "users/u1/jobs/j1/status.json"
    before = projected.read(status)
    projected.delete("platform/metadata/users.json")
    bucket = _fresh(projected)

    platform, u1 = rebuild_bucket(bucket, open_app=apps_on(bucket))

    assert platform.ok and platform.written == ["platform/metadata/users.json"]
    assert not u1.ok and u1.written == [] and u1.deleted == []
    assert u1.chain is not None and (u1.chain.problem, u1.chain.first_bad_seq) == ("bad signature", 6)
    assert projected.read(status) == before
    (line,) = problem_lines(u1)
    assert line.startswith("users/u1: CHAIN BROKEN: bad signature at commit 6: ")


def test_rebuild_reports_a_log_that_breaks_during_the_replay(
    projected: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log that check_log passed but the replay finds broken (ChainBroken, a DataError) is reported."""
    import projections.audit as audit
    from storage.eventstore.chain import ChainReport

    data = projected.read(_commit(6))
    projected.write(_commit(6), data.replace(b'\\"gpu_ms\\":600000', b'\\"gpu_ms\\":900000'))
    bucket = _fresh(projected)
    monkeypatch.setattr(audit, "check_log", lambda b, p: ChainReport.of(p, 0, []))  # edited after the check
    report = rebuild_partition(bucket, U1, apps_on(bucket))
    assert not report.ok and report.written == []
    assert report.replay_error is not None and report.replay_error.startswith("ChainBroken: ")
    assert audit.problem_lines(report) == [f"users/u1: REPLAY FAILED: {report.replay_error}"]
