"""The projector: writes views from a tracked position; restart-safe, exactly-once, safe to race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from projections.projector import Projector
from projections.render import decode
from projections.replay import apps_on, replay
from projections.store import ViewStore
from storage import LocalBucket, layout
from storage.bucket import Bucket, BucketError
from storage.layout import PLATFORM
from tests.unit.projections.builders import Apps, FlakyBucket, PlatformLog, UserLog, copy_log

U1 = "users/u1"


def _stored_views(bucket: Bucket, partition: str) -> dict[str, bytes]:
    prefixes = [f"{partition}/"] + (["users/"] if partition == PLATFORM else [])
    names = {n for p in prefixes for n in bucket.list(p) if n.endswith(".json") and "/events/" not in n}
    if partition == PLATFORM:
        names = {
            n
            for n in names
            if n.startswith("platform/") or n.endswith(("user_info.json", "gpu_pricing.json"))
        }
    else:
        names = {n for n in names if not n.endswith(("user_info.json", "gpu_pricing.json"))}
    return {n: bucket.read(n) for n in sorted(names)}


def assert_views_equal_rebuild(bucket: Bucket, apps: Apps, partition: str) -> None:
    """Every stored view and index object has exactly the bytes of a rebuild from position 0, and none
    is missing."""
    part = replay(apps(partition), partition)
    expected = {n: part.views.render(n) for n in sorted(part.views.names() + part.views.index_names())}
    assert _stored_views(bucket, partition) == expected


def _busy_user(log: UserLog, jobs: int = 3) -> None:
    log.upload("ds1")
    log.dataset("ds1", "validate", "chat", 10, {})
    log.set_budget(100_000_000)
    for i in range(jobs):
        job_id = f"j{i}"
        log.submit(job_id)
        log.run(job_id)
        for step in range(1, 4):
            log.do(job_id, "report_progress", 1, step, 3, None, 1.0 / step, step * 100)
            log.meter(job_id, 60_000, 2_100_000)
        log.do(job_id, "mark_succeeded")
        log.register_model(f"m-{job_id}", job_id)


@pytest.fixture
def bucket(tmp_path: Path) -> LocalBucket:
    return LocalBucket(tmp_path / "bucket", fsync=False)  # unit tests: no power-loss safety needed


def test_catch_up_writes_every_view_with_its_position(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    _busy_user(log, jobs=2)
    projector = Projector(bucket, apps)
    head = projector.catch_up(U1)
    assert head == apps(U1).recorder.max_notification_id()
    assert decode(bucket.read(layout.position(U1)))["position"] == head
    status = decode(bucket.read("users/u1/jobs/j1/status.json"))
    assert status["status"] == "succeeded" and status["cost_usd_micros"] == 6_300_000 // 60
    assert_views_equal_rebuild(bucket, apps, U1)


def test_incremental_catch_up_rewrites_only_the_views_that_changed(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    _busy_user(log, jobs=2)
    projector = Projector(bucket, apps)
    projector.catch_up(U1)
    before = {n: bucket.stat(n).generation for n in _stored_views(bucket, U1)}
    log.submit("j9")
    log.run("j9")
    log.do("j9", "report_progress", 1, 1, 10, None, 2.0, 10)
    projector.catch_up(U1)
    after = {n: bucket.stat(n).generation for n in _stored_views(bucket, U1)}
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed == {
        "users/u1/jobs/j9/status.json",
        "users/u1/metadata/jobs.json",
        layout.index_page("u1", "jobs", 0),
        layout.index_head("u1", "jobs"),
        layout.position(U1),
    }
    assert_views_equal_rebuild(bucket, apps, U1)


def test_a_restarted_projector_writes_nothing_when_views_are_current(bucket: LocalBucket) -> None:
    apps = Apps()
    _busy_user(UserLog(apps(U1)))
    Projector(bucket, apps).catch_up(U1)
    counting = FlakyBucket(bucket)
    restarted = Projector(counting, apps)
    assert restarted.catch_up(U1) == apps(U1).recorder.max_notification_id()
    # the partition's position.json, the heads of its three indexes, and its three complete listings
    # (their writes may have been coalesced: each has its own position)
    assert counting.writes == 0 and counting.reads == 7


def test_crash_mid_flush_then_restart_counts_every_event_exactly_once(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    _busy_user(log, jobs=3)
    Projector(bucket, apps).catch_up(U1)
    for i in range(3):  # more usage on every job, then a crash halfway through writing it
        log.meter(f"j{i}", 3_600_000, 2_100_000)
    flaky = FlakyBucket(bucket, fail_on_write=3)
    with pytest.raises(BucketError):
        Projector(flaky, apps).catch_up(U1)
    assert decode(bucket.read(layout.position(U1)))["position"] < apps(U1).recorder.max_notification_id()

    Projector(bucket, apps).catch_up(U1)  # the restart
    billing = decode(bucket.read("users/u1/metadata/billing.json"))
    per_job = 3 * 35_000 + 2_100_000  # three 1-minute batches and one hour at $2.10/h, one group
    assert [j["cost_usd_micros"] for j in billing["current_period"]["jobs"]] == [per_job] * 3
    assert billing["current_period"]["total_cost_usd_micros"] == 3 * per_job
    assert decode(bucket.read("users/u1/jobs/j2/status.json"))["cost_usd_micros"] == per_job
    assert_views_equal_rebuild(bucket, apps, U1)


def test_a_failed_flush_is_retried_by_the_same_projector(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    _busy_user(log, jobs=1)
    flaky = FlakyBucket(bucket, fail_on_write=4)
    projector = Projector(flaky, apps)
    with pytest.raises(BucketError):
        projector.catch_up(U1)
    flaky.fail_on_write = None
    projector.catch_up(U1)
    assert_views_equal_rebuild(bucket, apps, U1)


def test_two_projectors_racing_on_one_bucket_converge_and_never_regress(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    a, b = Projector(bucket, apps), Projector(LocalBucket(bucket.root), apps)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_catching_up(projector: Projector) -> None:
        try:
            while not stop.is_set():
                projector.catch_up(U1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=keep_catching_up, args=(p,)) for p in (a, b)]
    for t in threads:
        t.start()
    try:
        _busy_user(log, jobs=4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    a.catch_up(U1)
    b.catch_up(U1)
    assert_views_equal_rebuild(bucket, apps, U1)


def test_a_projector_that_is_behind_never_overwrites_newer_views(bucket: LocalBucket) -> None:
    apps, lagging = Apps(), Apps()  # ``lagging`` is a replica of the log that has not seen the last event
    log = UserLog(apps(U1))
    log.submit("j1")
    copy_log(apps(U1), lagging(U1))
    behind = Projector(bucket, lagging)
    behind.catch_up(U1)  # it now remembers the generation of status.json at position 1
    log.run("j1")
    copy_log(apps(U1), lagging(U1), upto=2)  # the replica gets the Queued event, not Started
    Projector(bucket, apps).catch_up(U1)  # another process writes the Started state first
    newer = bucket.read("users/u1/jobs/j1/status.json")
    assert decode(newer)["status"] == "running"

    assert behind.catch_up(U1) == 2  # its write at position 2 loses the generation race, re-reads, skips
    assert bucket.read("users/u1/jobs/j1/status.json") == newer
    assert decode(bucket.read(layout.position(U1)))["position"] == 3


def test_platform_views_reach_each_user(bucket: LocalBucket) -> None:
    apps = Apps()
    platform = PlatformLog(apps(PLATFORM))
    platform.register("u1")
    platform.set_price("a100-80gb", 2_100_000)
    platform.register("u2")
    platform.user("u1", "record_login")
    projector = Projector(bucket, apps)
    projector.catch_up(PLATFORM)
    assert decode(bucket.read("users/u1/metadata/user_info.json"))["last_login"] is not None
    for user in ("u1", "u2"):
        pricing = decode(bucket.read(f"users/{user}/metadata/gpu_pricing.json"))
        assert pricing["prices"]["a100-80gb"]["cost_per_hour"] == 2.1
    assert [u["user_id"] for u in decode(bucket.read("platform/metadata/users.json"))["users"]] == [
        "u1",
        "u2",
    ]
    platform.set_price("a100-80gb", 1_900_000, platform.clock.now.replace(year=2030))
    projector.catch_up(PLATFORM)
    assert_views_equal_rebuild(bucket, apps, PLATFORM)


def test_wait_for_with_the_background_loop(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    store = ViewStore(bucket)
    projector = Projector(bucket, apps, store=store)
    stop = threading.Event()
    thread = projector.start(stop)
    try:
        log.submit("j1")
        assert projector.wait_for(U1, timeout=5)
        assert store.read_json("users/u1/jobs/j1/status.json")[0]["status"] == "submitted"
        position = log.do("j1", "queue")
        projector.notify(U1)
        assert projector.wait_for(U1, position, timeout=5)
        assert store.read_json("users/u1/jobs/j1/status.json")[0]["status"] == "queued"
        assert not projector.wait_for(U1, position + 100, timeout=0.2)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_views_folded_from_a_state_read_before_a_release_are_not_trusted(bucket: LocalBucket) -> None:
    """A fold of this process's own commit is writing its views when another process's commit to the
    partition is heard (``release``): the views it feeds may miss that commit, so the store checks
    them against the bucket (where the projector role writes it) instead of trusting them."""
    apps = Apps()
    log = UserLog(apps(U1))
    log.submit("j1")
    status = "users/u1/jobs/j1/status.json"
    heard = FlakyBucket(bucket)
    store = ViewStore(heard)
    projector = Projector(heard, apps, store=store)
    write, heard_once = heard.write, []

    def write_and_hear_a_commit(name: str, data: bytes, *, if_generation_match: int | None = None):  # type: ignore[no-untyped-def]
        stat = write(name, data, if_generation_match=if_generation_match)
        if name == status and not heard_once:
            heard_once.append(name)
            projector.release(U1)
        return stat

    heard.write = write_and_hear_a_commit  # type: ignore[method-assign]
    projector.catch_up(U1)
    heard.stats = 0
    store.read_raw(status)
    assert heard.stats == 1  # checked by generation, not trusted

    projector.catch_up(U1)  # a fold that starts after the release is trusted again
    log.do("j1", "queue")
    projector.catch_up(U1)
    heard.stats = 0
    assert decode(store.read_raw(status)[0])["status"] == "queued" and heard.stats == 0


def test_with_several_workers_a_partition_slow_to_write_holds_up_no_other(bucket: LocalBucket) -> None:
    """The projector role folds many users' partitions: one waiting on the bucket must not queue the
    others behind it (a burst of submissions by 20 users lagged seconds, ``bench/bench_topology.py``)."""
    apps = Apps()
    one, two = UserLog(apps(U1), "u1"), UserLog(apps("users/u2"), "u2")
    slow, release = threading.Event(), threading.Event()
    stalled = FlakyBucket(bucket)
    write = stalled.write

    def stall_u1(name: str, data: bytes, *, if_generation_match: int | None = None):  # type: ignore[no-untyped-def]
        if name.startswith("users/u1/"):
            slow.set()
            release.wait(10)
        return write(name, data, if_generation_match=if_generation_match)

    stalled.write = stall_u1  # type: ignore[method-assign]
    projector = Projector(stalled, apps, workers=2)
    stop = threading.Event()
    thread = projector.start(stop)
    try:
        one.submit("j1")
        projector.notify(U1)
        assert slow.wait(5)
        two.submit("j1")
        assert projector.wait_for("users/u2", timeout=5)  # folded while u1's write waits
        assert projector.position(U1) == 0
        release.set()
        assert projector.wait_for(U1, timeout=5)
    finally:
        release.set()
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_wait_for_without_a_loop_catches_up_in_the_callers_thread(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    projector = Projector(bucket, apps)
    log.submit("j1")
    position = apps(U1).recorder.max_notification_id()
    assert projector.wait_for(U1, position)
    assert decode(bucket.read("users/u1/metadata/jobs.json"))["jobs"][0]["job_id"] == "j1"


def test_partitions_beyond_the_memory_bound_are_replayed_when_touched_again(bucket: LocalBucket) -> None:
    apps = Apps()
    one, two = UserLog(apps(U1), "u1"), UserLog(apps("users/u2"), "u2")
    one.submit("j1")
    two.submit("j1")
    projector = Projector(bucket, apps, max_partitions=1)
    projector.catch_up(U1)
    projector.catch_up("users/u2")
    assert projector.position(U1) == 0  # u1's state was let go
    one.do("j1", "queue")
    assert projector.catch_up(U1) == 2
    assert decode(bucket.read("users/u1/jobs/j1/status.json"))["status"] == "queued"
    assert_views_equal_rebuild(bucket, apps, U1)


def test_the_loop_survives_a_failing_partition_and_retries_it(bucket: LocalBucket) -> None:
    apps = Apps()
    log = UserLog(apps(U1))
    log.submit("j1")
    flaky = FlakyBucket(bucket, fail_on_write=1)
    projector = Projector(flaky, apps)
    stop = threading.Event()
    thread = projector.start(stop)
    try:
        projector.notify(U1)
        assert not projector.wait_for(U1, 1, timeout=0.5)  # its views could not be written
        assert flaky.writes >= 2  # and it kept trying
        flaky.fail_on_write = None
        assert projector.wait_for(U1, 1, timeout=5)
    finally:
        stop.set()
        thread.join(5)
    assert_views_equal_rebuild(bucket, apps, U1)


class _WriteLog(FlakyBucket):
    """Records the names written, in order."""

    def __init__(self, inner: Bucket) -> None:
        super().__init__(inner)
        self.names: list[str] = []

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> object:
        self.names.append(name)
        return super().write(name, data, if_generation_match=if_generation_match)


def test_a_model_is_written_before_the_job_that_names_it(tmp_path: Path) -> None:
    """A job succeeding registers its model in the same commit; the API shows a succeeded job's
    ``model_id`` (OpenAI's ``fine_tuned_model``) only once the model's view exists, so the model's views
    are written first: no reader sees the job succeeded without its model."""
    from tests.unit.projections.conftest import write_history

    inner = LocalBucket(tmp_path / "bucket", fsync=False)
    write_history(inner)
    bucket = _WriteLog(inner)
    Projector(bucket, apps_on(inner)).catch_up(U1)
    model = bucket.names.index(layout.model_metadata("u1", "m-j1"))
    assert model < bucket.names.index(layout.job_status("u1", "j1"))
    assert model < bucket.names.index(layout.jobs("u1"))
