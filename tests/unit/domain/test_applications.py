"""The service layer on eventsourcing's in-memory (POPO) store: commands, queries, refusals.

Every refusal must write nothing: the partition's last notification id is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.applications import PlatformApp, UserApp
from domain.dataset_format import validate_lines
from domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from domain.job import Job, JobState
from domain.metering import BudgetAlert, FixedUsage, JobAlert, LimitOrders, MeteredJob, UsageRun
from domain.model import ModelWeights
from domain.money import cost_usd_micros
from domain.read_models import BudgetView
from tests.unit.domain.conftest import at
from tests.usage import meter

SHA = "cd" * 32


@contextmanager
def writes_nothing(app: Application, error: type[Exception], match: str | None = None) -> Iterator[Any]:
    before = app.recorder.max_notification_id()
    with pytest.raises(error, match=match) as info:
        yield info
    assert app.recorder.max_notification_id() == before


@pytest.fixture
def platform() -> PlatformApp:
    return PlatformApp()


@pytest.fixture
def user() -> UserApp:
    app = UserApp("usr_1")
    app.upload_dataset("ds_1", "train.jsonl", 100, SHA, at())
    app.validate_dataset("ds_1", "chat", 10, {"tokens": 500}, at(1))
    return app


def submit(app: UserApp, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "base_model": "tiny-llama",
        "dataset_id": "ds_1",
        "config": {"epochs": 1},
        "gpu_type": "cpu",
        "gpu_count": 1,
        "at": at(2),
        "job_id": "job_1",
        "model_id": "mdl_1",
    }
    fields.update(overrides)
    return app.submit_job(**fields)


# ---- platform ----


def test_register_and_find_users(platform: PlatformApp) -> None:
    user_id = platform.register_user("Ada@Example.com", "$argon2id$h", "admin", at())
    assert user_id.startswith("usr_")
    view = platform.find_user_by_email("ada@EXAMPLE.com")
    assert view is not None and (view.user_id, view.email, view.role, view.version) == (
        user_id,
        "ada@example.com",
        "admin",
        1,
    )
    assert platform.get_credentials("ada@example.com").password_hash == "$argon2id$h"  # type: ignore[union-attr]
    assert platform.find_user_by_email("nobody@example.com") is None
    assert not hasattr(view, "password_hash")


def test_a_taken_email_or_id_is_refused_and_nothing_written(platform: PlatformApp) -> None:
    platform.register_user("ada@example.com", "h", "user", at(), user_id="usr_ada")
    with writes_nothing(platform, Conflict, "already registered") as info:
        platform.register_user("ADA@example.com", "h", "user", at(1))
    assert info.value.code == "email_taken"
    with writes_nothing(platform, Conflict, "user usr_ada already exists"):
        platform.register_user("other@example.com", "h", "user", at(1), user_id="usr_ada")


def test_unknown_and_malformed_user_ids(platform: PlatformApp) -> None:
    with writes_nothing(platform, NotFound, "no user usr_x") as info:
        platform.suspend_user("usr_x", "spam", at())
    assert info.value.where == "user_id"
    with pytest.raises(ValidationFailed):
        platform.get_user("../etc")


def test_suspension_blocks_login_and_quota_changes_show(platform: PlatformApp) -> None:
    uid = platform.register_user("b@example.com", "h", "user", at())
    assert platform.record_login(uid, at(1)).last_login_at == at(1)
    platform.suspend_user(uid, "abuse", at(2))
    with writes_nothing(platform, Forbidden, "suspended"):
        platform.record_login(uid, at(3))
    assert platform.reactivate_user(uid, at(4)).status == "active"
    assert platform.set_quota(uid, 4, 2**30, at(5)).max_concurrent_jobs == 4


def test_a_stale_expected_version_is_refused(platform: PlatformApp) -> None:
    uid = platform.register_user("c@example.com", "h", "user", at())
    platform.set_quota(uid, 3, 1000, at(1), expected_version=1)
    with writes_nothing(platform, Conflict, "at version 2, not 1") as info:
        platform.set_quota(uid, 9, 1000, at(2), expected_version=1)
    assert info.value.code == "version_conflict"
    assert platform.get_user(uid).max_concurrent_jobs == 3


def test_default_prices_once_then_changes_from_their_effective_time(platform: PlatformApp) -> None:
    with pytest.raises(NotFound):
        platform.price_at("cpu", at())
    assert "h100-80gb" in platform.ensure_default_prices(at())
    with writes_nothing(platform, AssertionError):  # a second call adds nothing and writes nothing
        assert platform.ensure_default_prices(at(1)) == []
        raise AssertionError
    platform.set_price("h100-80gb", 2_000_000, at(60), at(2))
    assert platform.price_at("h100-80gb", at(59)) != 2_000_000
    assert platform.price_at("h100-80gb", at(60)) == 2_000_000
    listing = platform.price_list(at(30))
    assert [p.gpu_type for p in listing.scheduled] == ["h100-80gb"]
    assert len(listing.prices) == 7 and listing.prices == sorted(listing.prices, key=lambda p: p.gpu_type)
    with writes_nothing(platform, Conflict, "must take effect later"):
        platform.set_price("h100-80gb", 1, at(30), at(3))


def test_base_model_catalogue(platform: PlatformApp) -> None:
    assert platform.base_models() == []
    entries = [("tiny-llama", "builtin", "tiny-llama"), ("llama3-8b", "hub", "meta-llama/Meta-Llama-3-8B")]
    assert platform.ensure_base_models(entries, at()) == ["tiny-llama", "llama3-8b"]
    assert platform.ensure_base_models(entries, at(1)) == []
    view = platform.add_base_model("mine", "local", "/srv/models/mine", at(2), chat_template=False)
    assert (view.source_kind, view.chat_template) == ("local", False)
    with writes_nothing(platform, Conflict, "already in the catalogue"):
        platform.add_base_model("mine", "local", "/x", at(3))
    platform.remove_base_model("llama3-8b", at(4))
    assert [m.name for m in platform.base_models()] == ["mine", "tiny-llama"]
    with writes_nothing(platform, NotFound, "no base model 'llama3-8b'"):
        platform.remove_base_model("llama3-8b", at(5))


# ---- one user's partition ----


def test_user_id_comes_from_the_partition_when_not_given() -> None:
    assert UserApp(env={"TUNE_PARTITION": "users/usr_9/events/"}).user_id == "usr_9"
    assert UserApp(env={"TUNE_USER_ID": "usr_8"}).user_id == "usr_8"
    with pytest.raises(ValidationFailed):
        UserApp(env={"TUNE_PARTITION": "users/../x/events/"})
    with pytest.raises(ValidationFailed):
        UserApp(env={"TUNE_PARTITION": "platform/events/"})


def test_submit_needs_a_validated_dataset(user: UserApp) -> None:
    user.upload_dataset("ds_raw", "raw.jsonl", 5, SHA, at())
    with writes_nothing(user, Conflict, "dataset ds_raw is uploaded; only a validated dataset") as info:
        submit(user, dataset_id="ds_raw")
    assert info.value.where == "dataset_id"
    with writes_nothing(user, NotFound, "no dataset ds_none"):
        submit(user, dataset_id="ds_none")
    assert submit(user) == "job_1"
    with writes_nothing(user, Conflict, "job job_1 already exists"):
        submit(user)


def test_a_job_lifecycle_with_billing_and_its_model(user: UserApp) -> None:
    job_id = submit(user)
    user.queue_job(job_id, at(3))
    user.start_job(job_id, 1, at(4))
    user.report_progress(job_id, 1, 5, 10, 0.5, 2.0, 640, at(5))
    user.save_checkpoint(job_id, 1, 5, "users/usr_1/jobs/job_1/checkpoints/5", at(5))
    meter(user, job_id, 1, 0, 9, "cpu", 1, 600_000, 50_000, "2026-03", at(6))
    with writes_nothing(user, Conflict, "already metered"):
        meter(user, job_id, 1, 5, 12, "cpu", 1, 600_000, 50_000, "2026-03", at(7))
    weights = ModelWeights(
        kind="lora",
        weights_prefix="users/usr_1/models/mdl_1/weights/",
        sha256=SHA,
        size_bytes=99,
        metrics={"loss": 1.5},
    )
    view = user.mark_succeeded(job_id, at(8), metrics={"train_loss": 1.5}, weights=weights)
    assert (view.state, view.step, view.last_checkpoint.step) == (JobState.SUCCEEDED, 5, 5)  # type: ignore[union-attr]
    assert (view.gpu_ms, view.cost_usd_micros) == (600_000, cost_usd_micros(600_000, 1, 50_000))
    model = user.get_model("mdl_1")
    assert (model.job_id, model.kind, model.base_model) == ("job_1", "lora", "tiny-llama")
    with writes_nothing(user, Conflict, "job job_1 is succeeded; cannot start it"):
        user.start_job(job_id, 2, at(9))
    with writes_nothing(user, Conflict, "in use by active job"):
        user.delete_model("mdl_1", ["job_2"], at(9))
    assert user.delete_model("mdl_1", [], at(10)).status == "deleted"


def test_mark_succeeded_writes_job_and_model_together_or_not_at_all(user: UserApp) -> None:
    job_id = submit(user)
    weights = ModelWeights(kind="lora", weights_prefix="w/", sha256=SHA, size_bytes=1)
    with writes_nothing(user, Conflict, "is submitted; cannot mark succeeded"):
        user.mark_succeeded(job_id, at(3), weights=weights)
    with pytest.raises(NotFound):
        user.get_model("mdl_1")


def test_stop_request_paths(user: UserApp) -> None:
    submit(user, job_id="job_q")
    user.queue_job("job_q", at(3))
    assert user.request_stop("job_q", "not needed", at(4)).state == JobState.STOPPED
    submit(user, job_id="job_r", model_id="mdl_r")
    user.queue_job("job_r", at(3))
    user.start_job("job_r", 1, at(4))
    assert user.request_stop("job_r", "budget", at(5)).state == JobState.STOPPING
    stopped = user.mark_stopped("job_r", at(6), step=3)
    assert (stopped.state, stopped.stop_reason, stopped.step) == (JobState.STOPPED, "budget", 3)


def test_retry_and_lost(user: UserApp) -> None:
    job_id = submit(user)
    user.queue_job(job_id, at(3))
    user.start_job(job_id, 1, at(4))
    user.retry_job(job_id, 2, "oom", at(5))
    user.start_job(job_id, 2, at(6))
    user.mark_lost(job_id, at(6), at(20))
    assert user.mark_failed(job_id, "lost", at(21)).state == JobState.FAILED


def test_unknown_job_is_not_found_naming_it(user: UserApp) -> None:
    with writes_nothing(user, NotFound, "no job job_nope") as info:
        user.queue_job("job_nope", at())
    assert info.value.where == "job_id"


def test_datasets_in_use_cannot_be_deleted(user: UserApp) -> None:
    with writes_nothing(user, Conflict, "ds_1 is in use by active job[(]s[)] job_1"):
        user.delete_dataset("ds_1", ["job_1"], at(3))
    assert user.delete_dataset("ds_1", [], at(4), expected_version=2).status == "deleted"
    rejected = user.upload_dataset("ds_bad", "b.jsonl", 1, SHA, at(5))
    assert rejected.status == "uploaded"
    view = user.reject_dataset("ds_bad", [{"line": 1, "message": "not JSON"}], at(6))
    assert view.errors == [{"line": 1, "message": "not JSON"}]
    with writes_nothing(user, Conflict, "already exists"):
        user.upload_dataset("ds_bad", "b.jsonl", 1, SHA, at(7))


def test_an_upload_with_its_report_records_its_verdict_in_the_same_save(user: UserApp) -> None:
    before = user.recorder.max_notification_id()
    good = validate_lines([b'{"text": "x"}\n'] * 10)
    assert user.upload_dataset("ds_ok", "a.jsonl", 140, SHA, at(5), report=good).status == "validated"
    bad = validate_lines([b"[" * 100 + b"]" * 100])
    view = user.upload_dataset("ds_no", "b.jsonl", 200, SHA, at(6), report=bad)
    assert view.status == "rejected" and view.errors[0]["line"] == 0 and view.errors[1]["line"] == 1
    assert user.recorder.max_notification_id() == before + 4  # Uploaded + Validated, Uploaded + Rejected
    assert user.get_dataset("ds_ok").rows == 10


def test_budget(user: UserApp) -> None:
    empty = user.get_budget()
    assert (empty.monthly_limit_usd_micros, empty.thresholds_pct, empty.version) == (None, [50, 80, 100], 0)
    with writes_nothing(user, Conflict, "version 0, not 1"):
        user.set_budget(10_000_000, at(), expected_version=1)
    assert user.set_budget(10_000_000, at(), expected_version=0).monthly_limit_usd_micros == 10_000_000
    assert user.get_budget().version == 2  # created, then set


def running(user: UserApp, **overrides: Any) -> str:
    job_id = submit(user, **overrides)
    user.queue_job(job_id, at(3))
    user.start_job(job_id, 1, at(4))
    return job_id


def test_usage_alerts_and_stops_of_several_jobs_are_one_commit(user: UserApp) -> None:
    first = running(user, job_id="job_1", max_cost_usd_micros=10_000)
    second = running(user, job_id="job_2", model_id="mdl_2")
    user.set_budget(10_000_000, at(5))
    head = user.recorder.max_notification_id()
    runs = [usage_run(first, 0, 9), usage_run(second, 0, 4), usage_run(first, 5, 12)]  # the last: a repeat
    seen: list[MeteredJob] = []

    class Plan(FixedUsage):
        def limit_orders(self, jobs: Sequence[MeteredJob], budget: BudgetView | None) -> LimitOrders:
            seen.extend(jobs)
            assert budget is not None and budget.monthly_limit_usd_micros == 10_000_000
            return LimitOrders(
                job_alerts=[JobAlert(first, 50, 6000, 10_000)],
                budget_alerts=[BudgetAlert("2026-03", 50, 6_000_000)],
                stop_job_ids=[first, "job_9"],  # job_9: none such, passed over
                stop_reason="budget_exceeded",
                stop_states=frozenset({JobState.RUNNING}),
            )

    result = user.meter_usage(["job_1", "job_2", "job_nope", "bad id"], Plan(runs), at(6))
    assert result.unknown_job_ids == ["job_nope", "bad id"]
    assert [(r.run.job_id, r.run.first_seq) for r in result.refused] == [(first, 5)]
    assert [j.job_id for j in seen] == [first, second]
    assert [type(e).__name__ for e in seen[0].events] == ["UsageMetered"]
    assert seen[0].cost_usd_micros == cost_usd_micros(600_000, 1, 50_000)
    assert (result.alerts, result.stops, result.events) == (2, 1, 5)
    assert (result.first_position, result.last_position) == (head + 1, head + 5)  # type: ignore[operator]
    assert user.recorder.max_notification_id() == head + 5  # type: ignore[operator]
    assert user.get_job(first).state == JobState.STOPPING and user.get_job(first).alerts == ["job:50"]
    assert user.get_job(second).state == JobState.RUNNING
    assert user.get_budget().alerts == {"2026-03": [50]}


def test_metering_that_records_nothing_or_breaks_a_rule_writes_nothing(user: UserApp) -> None:
    job_id = running(user)
    assert user.meter_usage(["job_x"], FixedUsage([]), at(6)).last_position is None
    with writes_nothing(user, Conflict, "has no budget"):  # an alert on a budget never set
        meter(user, job_id, 1, 0, 0, "cpu", 1, 10, 50_000, "2026-03", at(6),
              orders=LimitOrders(budget_alerts=[BudgetAlert("2026-03", 50, 1)]))  # fmt: skip
    user.set_budget(10_000_000, at(7))
    meter(user, job_id, 1, 0, 0, "cpu", 1, 10, 50_000, "2026-03", at(8),
          orders=LimitOrders(budget_alerts=[BudgetAlert("2026-03", 50, 8_000_000)]))  # fmt: skip
    with writes_nothing(user, Conflict, "already raised"):
        meter(user, job_id, 1, 1, 1, "cpu", 1, 10, 50_000, "2026-03", at(9),
              orders=LimitOrders(budget_alerts=[BudgetAlert("2026-03", 50, 8_000_000)]))  # fmt: skip
    assert user.get_budget().alerts == {"2026-03": [50]}
    assert user.get_job(job_id).gpu_ms == 10


def test_a_lost_job_is_retried_while_its_retries_last_then_failed(user: UserApp) -> None:
    job_id = running(user, config={"max_retries": 1})
    view = user.declare_lost(job_id, at(5), "silent", at(6), expected_version=3)
    assert (view.state, view.attempt) == (JobState.RETRYING, 2)
    user.start_job(job_id, 2, at(8))
    with writes_nothing(user, Conflict, "version"):
        user.declare_lost(job_id, None, "silent", at(9), expected_version=3)
    version = user.get_job(job_id).version
    view = user.declare_lost(job_id, None, "silent", at(9), expected_version=version)
    assert view.state == JobState.FAILED and view.error == "silent; no retries left (2 attempts)"


def test_a_lost_job_asked_to_stop_is_stopped(user: UserApp) -> None:
    job_id = running(user)
    user.request_stop(job_id, "user", at(5))
    view = user.declare_lost(job_id, None, "silent", at(6), expected_version=user.get_job(job_id).version)
    assert view.state == JobState.STOPPED and view.stop_reason == "user"


def test_a_concurrent_writer_gets_a_conflict_and_its_write_is_dropped(tmp_path: Path) -> None:
    shared = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "events.db")}
    stale = UserApp(
        "usr_1", env={**shared, "AGGREGATE_CACHE_MAXSIZE": "100", "AGGREGATE_CACHE_FASTFORWARD": "n"}
    )
    fresh = UserApp("usr_1", env=shared)
    stale.upload_dataset("ds_1", "t.jsonl", 1, SHA, at())
    stale.validate_dataset("ds_1", "chat", 1, {}, at(1))
    submit(stale)
    stale.get_job("job_1")  # cached at version 1
    fresh.queue_job("job_1", at(3))
    with writes_nothing(fresh, Conflict, "another write reached this object first") as info:
        stale.request_stop("job_1", "cancel", at(4))  # acts on its stale copy: submitted -> stopped
    assert info.value.code == "version_conflict"
    assert fresh.get_job("job_1").state == JobState.QUEUED


def test_a_stored_v1_submitted_event_is_upcast_when_loaded(user: UserApp) -> None:
    job_id = submit(user, gpu_count=2)
    (stored,) = user.recorder.select_events(Job.create_id(job_id))
    v1_state = (
        stored.state.replace(b',"class_version":3', b"")
        .replace(b'"gpu_count":2,', b"")
        .replace(b'"start_from":null,', b"")
    )
    legacy = UserApp("usr_1")
    legacy.recorder.insert_events([StoredEvent(stored.originator_id, 1, stored.topic, v1_state)])
    assert legacy.get_job(job_id).gpu_count == 1


def test_long_jobs_are_snapshotted(user: UserApp) -> None:
    job_id = submit(user)
    user.queue_job(job_id, at(3))
    user.start_job(job_id, 1, at(4))
    for step in range(1, 200):
        user.report_progress(job_id, 1, step, None, None, None, step, at(5))
    assert user.snapshots is not None
    (snapshot,) = user.snapshots.get(Job.create_id(job_id))
    assert snapshot.originator_version == 200
    assert user.get_job(job_id).step == 199


@pytest.mark.parametrize(
    "command",
    [
        lambda u: u.start_job("job_1", 1, at(9)),
        lambda u: u.report_progress("job_1", 1, 1, None, None, None, 0, at(9)),
        lambda u: u.save_checkpoint("job_1", 1, 1, "p", at(9)),
        lambda u: u.mark_succeeded("job_1", at(9)),
        lambda u: u.mark_lost("job_1", None, at(9)),
        lambda u: u.retry_job("job_1", 1, "x", at(9)),
        lambda u: meter(u, "job_1", 1, 0, 0, "cpu", 1, 10, 50_000, "2026-03", at(9)),
    ],
)
def test_impossible_job_commands_write_nothing(user: UserApp, command: Callable[[UserApp], Any]) -> None:
    submit(user)
    with writes_nothing(user, Conflict):
        command(user)


def usage_run(job_id: str, first_seq: int, last_seq: int) -> UsageRun:
    """Heartbeats ``first_seq..last_seq`` of attempt 1, a minute each, on one CPU."""
    count = last_seq - first_seq + 1
    return UsageRun(job_id=job_id, attempt=1, first_seq=first_seq, last_seq=last_seq, gpu_type="cpu",
                    gpu_count=1, gpu_ms=60_000 * count, usd_micros_per_hour=50_000, period="2026-03",
                    last_at=at(6), heartbeats=count)  # fmt: skip
