"""The dispatcher's launch policy on a fake backend, several users: the fair order across users,
each user's concurrent-job quota at launch, the monthly budget checked before a launch, and a job
that waits while its hardware is all taken (``NoCapacity``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from domain.applications import UserApp
from domain.errors import NotFound
from domain.job import JobState
from domain.money import period_of
from domain.placement import Placement
from domain.scheduling import BUDGET_SPENT
from runners.backends import NoCapacity
from runners.dispatcher import Dispatcher, JobRef
from storage import LocalBucket
from tests.unit.runners.builders import now, seed_dataset, submit_job
from tests.unit.runners.test_dispatcher import FakeBackend
from tests.usage import meter

USERS = ("usr_a", "usr_b", "usr_c")


class FakePlatform:
    """The users' quotas (``PlatformApp.get_user`` is all the dispatcher's gate asks)."""

    def __init__(self, quotas: dict[str, int]) -> None:
        self.quotas = quotas

    def get_user(self, user_id: str) -> SimpleNamespace:
        if user_id not in self.quotas:
            raise NotFound(f"no user {user_id}")
        return SimpleNamespace(max_concurrent_jobs=self.quotas[user_id])


@pytest.fixture
def apps(local_bucket: LocalBucket) -> dict[str, UserApp]:
    apps = {user_id: UserApp(user_id) for user_id in USERS}
    for app in apps.values():
        seed_dataset(local_bucket, app)
    return apps


def dispatcher_for(
    bucket: LocalBucket, backend: FakeBackend, apps: dict[str, UserApp], *, slots: int, quotas: dict[str, int]
) -> Dispatcher:
    return Dispatcher(
        bucket,
        backend,
        open_app=apps.__getitem__,
        max_concurrent=slots,
        platform=FakePlatform(quotas),  # type: ignore[arg-type]
    )


def submit(dispatcher: Dispatcher, apps: dict[str, UserApp], user_id: str, job_id: str) -> None:
    submit_job(apps[user_id], job_id=job_id, max_retries=0)
    dispatcher.submit(user_id, job_id)


def launched(backend: FakeBackend) -> list[str]:
    return [r.job_id for r in backend.launched]


def finish(backend: FakeBackend, apps: dict[str, UserApp], user_id: str, job_id: str) -> None:
    apps[user_id].start_job(job_id, 1, now())
    apps[user_id].mark_failed(job_id, "done", now())
    backend.end_attempt(f"{job_id}-1")


def test_one_user_s_long_queue_does_not_starve_the_others(
    local_bucket: LocalBucket, apps: dict[str, UserApp]
) -> None:
    backend = FakeBackend()
    dispatcher = dispatcher_for(local_bucket, backend, apps, slots=2, quotas=dict.fromkeys(USERS, 10))
    for n in range(6):
        submit(dispatcher, apps, "usr_a", f"a{n}")
    submit(dispatcher, apps, "usr_b", "b0")
    submit(dispatcher, apps, "usr_c", "c0")
    dispatcher.poll()
    assert launched(backend) == ["a0", "b0"]  # a global FIFO would have started a0, a1
    finish(backend, apps, "usr_a", "a0")
    dispatcher.poll()
    assert launched(backend) == ["a0", "b0", "c0"]  # c has nothing running: before a's second
    finish(backend, apps, "usr_b", "b0")
    dispatcher.poll()
    assert launched(backend) == ["a0", "b0", "c0", "a1"]


def test_a_user_at_their_quota_waits_and_others_go_ahead(
    local_bucket: LocalBucket, apps: dict[str, UserApp]
) -> None:
    backend = FakeBackend()
    dispatcher = dispatcher_for(local_bucket, backend, apps, slots=4, quotas={"usr_a": 1, "usr_b": 2})
    for job_id in ("a0", "a1", "a2"):
        submit(dispatcher, apps, "usr_a", job_id)
    submit(dispatcher, apps, "usr_b", "b0")
    dispatcher.poll()
    assert launched(backend) == ["a0", "b0"]  # a free slot is left rather than a1 past the quota
    assert apps["usr_a"].get_job("a1").state == JobState.QUEUED
    assert dispatcher.queued() == [JobRef("usr_a", "a1"), JobRef("usr_a", "a2")]
    finish(backend, apps, "usr_a", "a0")
    dispatcher.poll()
    assert launched(backend) == ["a0", "b0", "a1"]


def test_a_job_whose_user_s_budget_is_spent_is_stopped_instead_of_launched(
    local_bucket: LocalBucket, apps: dict[str, UserApp]
) -> None:
    backend = FakeBackend()
    dispatcher = dispatcher_for(local_bucket, backend, apps, slots=1, quotas={})
    app = apps["usr_a"]
    submit(dispatcher, apps, "usr_a", "spender")
    dispatcher.poll()
    app.start_job("spender", 1, now())
    at = now()
    meter(app, "spender", 1, 1, 1, "cpu", 1, 3_600_000, 50_000, period_of(at), at)  # $0.05 spent
    app.set_budget(50_000, at)  # ... which is the whole budget: the queued job (forced) must not start
    submit(dispatcher, apps, "usr_a", "forced")
    app.mark_failed("spender", "done", now())
    backend.end_attempt("spender-1")
    dispatcher.poll()
    assert launched(backend) == ["spender"]
    job = app.get_job("forced")
    assert (job.state, job.stop_reason) == (JobState.STOPPED, BUDGET_SPENT)
    assert dispatcher.queued() == []


def test_a_job_under_its_user_s_budget_launches(local_bucket: LocalBucket, apps: dict[str, UserApp]) -> None:
    backend = FakeBackend()
    dispatcher = dispatcher_for(local_bucket, backend, apps, slots=1, quotas={})
    apps["usr_b"].set_budget(1_000_000, now())
    submit(dispatcher, apps, "usr_b", "b0")
    dispatcher.poll()
    assert launched(backend) == ["b0"]


class BusyBackend(FakeBackend):
    """Has the hardware, but all of it is taken until ``free``."""

    busy: bool = True

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        if self.busy:
            raise NoCapacity("all taken")
        return super().place(gpu_type, gpu_count)


def test_a_job_whose_hardware_is_all_taken_waits_at_the_head_of_the_queue(
    local_bucket: LocalBucket, apps: dict[str, UserApp]
) -> None:
    backend = BusyBackend()
    dispatcher = dispatcher_for(local_bucket, backend, apps, slots=1, quotas={})
    submit(dispatcher, apps, "usr_a", "a0")
    for _ in range(3):  # more polls than the start failures a job may have
        dispatcher.poll()
    assert apps["usr_a"].get_job("a0").state == JobState.QUEUED
    assert dispatcher.queued() == [JobRef("usr_a", "a0")]
    backend.busy = False
    dispatcher.poll()
    assert launched(backend) == ["a0"]
