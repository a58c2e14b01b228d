"""The dispatcher on a fake backend: queue order, concurrency, run.yaml, and what it does after a run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from domain.applications import UserApp
from domain.job import JobState
from domain.placement import Placement
from runners.attempt_spec import read_job_run
from runners.backends import (
    AliveRun,
    LaunchBackend,
    LaunchFailed,
    LaunchRequest,
    NotPlaceable,
    RunStatus,
)
from runners.dispatcher import Dispatcher, JobRef
from storage import LocalBucket
from tests.unit.runners.builders import now, wait_for


@dataclass
class FakeBackend:
    """Records launches; a run goes on until the test ``end``s it."""

    launched: list[LaunchRequest] = field(default_factory=list)
    ended: dict[str, int] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    refuse: bool = False
    closed: bool = False
    offered: dict[str, int] = field(default_factory=lambda: {"cpu": 1})
    alive: list[AliveRun] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    """Runs an earlier dispatcher launched that still go (``alive_runs``)."""

    def offers(self) -> dict[str, int]:
        return dict(self.offered)

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        if self.offered.get(gpu_type, 0) < gpu_count:
            raise NotPlaceable(f"no {gpu_type} x{gpu_count} here")
        return Placement(gpu_type=gpu_type, gpu_count=gpu_count, node="fake")

    def launch(self, request: LaunchRequest) -> Placement:
        if self.refuse:
            raise LaunchFailed("no capacity")
        self.launched.append(request)
        assert request.placement is not None
        return request.placement

    def status(self, run_id: str) -> RunStatus:
        if run_id in self.ended:
            return RunStatus(run_id, running=False, exit_code=self.ended[run_id])
        return RunStatus(run_id, running=True)

    def stop(self, run_id: str) -> None:
        self.stopped.append(run_id)

    def forget(self, run_id: str) -> None:
        pass

    def alive_runs(self) -> list[AliveRun]:
        return [run for run in self.alive if run.run_id not in self.adopted]

    def adopt(self, run: AliveRun) -> None:
        self.adopted.append(run.run_id)

    def close(self, timeout: float = 30.0) -> None:
        self.closed = True
        for request in self.launched:
            self.ended.setdefault(request.run_id, 0)

    def end(self, run_id: str, code: int = 0) -> None:
        self.ended[run_id] = code

    @property
    def run_ids(self) -> list[str]:
        """``<job_id>-<attempt>`` of each launch, in order."""
        return [f"{r.job_id}-{r.attempt}" for r in self.launched]

    def end_attempt(self, name: str, code: int = 0) -> None:
        """End the latest launch of ``<job_id>-<attempt>``."""
        [run_id] = [r.run_id for r in self.launched if f"{r.job_id}-{r.attempt}" == name][-1:]
        self.end(run_id, code)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def dispatcher(local_bucket: LocalBucket, app: UserApp, backend: FakeBackend) -> Dispatcher:
    notified: list[str] = []
    d = Dispatcher(
        local_bucket, backend, open_app=lambda user_id: app, max_concurrent=1, notify=notified.append
    )
    d.notified = notified  # type: ignore[attr-defined]
    return d


@pytest.fixture
def submitted(local_bucket: LocalBucket, app: UserApp):
    from tests.unit.runners.builders import seed_dataset, submit_job

    seed_dataset(local_bucket, app)

    def make(job_id: str = "job_1", **config):
        return submit_job(app, job_id=job_id, **{"max_retries": 1, **config})

    return make


@pytest.fixture
def launched(dispatcher: Dispatcher, submitted):
    """Submit ``job_1`` (``config`` as ``submitted`` takes it) and let the dispatcher launch attempt 1."""

    def make(**config) -> None:
        submitted(**config)
        dispatcher.submit("usr_1", "job_1")
        dispatcher.poll()

    return make


@pytest.fixture
def started(launched, app: UserApp):
    """``launched``, then the runner starts attempt 1 of ``job_1``."""

    def make(**config) -> None:
        launched(**config)
        app.start_job("job_1", 1, now())

    return make


def test_the_fake_backend_keeps_to_the_protocol(backend: FakeBackend) -> None:
    assert isinstance(backend, LaunchBackend)


def test_submit_queues_the_job_and_poll_launches_its_first_attempt(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp, local_bucket: LocalBucket
) -> None:
    submitted(heartbeat_interval_seconds=0.2, max_steps=7)
    dispatcher.submit("usr_1", "job_1")
    assert app.get_job("job_1").state == JobState.QUEUED
    assert dispatcher.queued() == [JobRef("usr_1", "job_1")]
    assert "users/usr_1" in dispatcher.notified  # type: ignore[attr-defined]

    dispatcher.poll()
    [request] = backend.launched
    assert request.run_id.startswith("job_1-1-")
    assert (request.attempt, request.gpu_type, request.gpu_count) == (1, "cpu", 1)
    assert request.bucket_url == local_bucket.url
    assert request.run_object == "users/usr_1/jobs/job_1/run.yaml"
    assert request.argv[-2:] == [local_bucket.url, request.run_object]
    spec = read_job_run(local_bucket, request.run_object)
    assert (spec.attempt, spec.resume_from, spec.model_id) == (1, None, "model_job_1")
    assert (spec.heartbeat_interval_s, spec.config.max_steps, spec.heartbeat_url) == (0.2, 7, "stdout:")
    assert dispatcher.running() == {JobRef("usr_1", "job_1"): request.run_id} and dispatcher.queued() == []


def test_jobs_run_first_in_first_out_within_the_concurrency_limit(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp
) -> None:
    for job_id in ("job_a", "job_b", "job_c"):
        submitted(job_id)
        dispatcher.submit("usr_1", job_id)
    dispatcher.poll()
    assert backend.run_ids == ["job_a-1"]

    app.start_job("job_a", 1, now())
    app.mark_failed("job_a", "boom", now())
    backend.end_attempt("job_a-1")
    dispatcher.poll()
    assert backend.run_ids == ["job_a-1", "job_b-1"]
    assert dispatcher.queued() == [JobRef("usr_1", "job_c")]


def test_submitting_twice_or_a_finished_job_changes_nothing(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp
) -> None:
    submitted("job_a")
    dispatcher.submit("usr_1", "job_a")
    dispatcher.submit("usr_1", "job_a")
    submitted("job_b")
    app.request_stop("job_b", "cancelled", now())
    dispatcher.submit("usr_1", "job_b")
    assert dispatcher.queued() == [JobRef("usr_1", "job_a")]


def test_a_job_submitted_again_while_its_launch_is_under_way_is_launched_once(
    dispatcher: Dispatcher, backend: FakeBackend, submitted
) -> None:
    """The role's follower hears the dispatcher's own Queued commit and submits the job again while
    ``poll`` launches it (off the queue, not yet active): found by ``bench/bench_topology.py``, where
    the second runner found the job running and the first was left unreaped."""
    submitted()
    dispatcher.submit("usr_1", "job_1")
    launch = backend.launch

    def launch_and_hear_the_job_again(request: LaunchRequest) -> Placement:
        dispatcher.submit("usr_1", "job_1")
        return launch(request)

    backend.launch = launch_and_hear_the_job_again  # type: ignore[method-assign]
    dispatcher.poll()
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1"] and dispatcher.queued() == []


def test_a_job_cancelled_while_queued_is_not_launched(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp
) -> None:
    submitted()
    dispatcher.submit("usr_1", "job_1")
    app.request_stop("job_1", "cancelled", now())
    dispatcher.poll()
    assert backend.launched == [] and dispatcher.queued() == []


def test_a_retrying_job_is_relaunched_from_its_last_checkpoint(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp, local_bucket: LocalBucket
) -> None:
    started()
    app.save_checkpoint("job_1", 1, 30, "users/usr_1/jobs/job_1/checkpoints/30/", now())
    app.retry_job("job_1", 2, "trainer killed", now())
    backend.end_attempt("job_1-1")
    dispatcher.poll()

    assert backend.run_ids == ["job_1-1", "job_1-2"]
    spec = read_job_run(local_bucket, backend.launched[1].run_object)
    assert (spec.attempt, spec.resume_from) == (2, "users/usr_1/jobs/job_1/checkpoints/30/")


@pytest.mark.parametrize(("max_retries", "then"), [(1, JobState.RETRYING), (0, JobState.FAILED)])
def test_a_runner_that_died_mid_attempt_makes_the_job_lost_then_retried_or_failed(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp, max_retries: int, then: JobState
) -> None:
    started(max_retries=max_retries)
    backend.end_attempt("job_1-1", -9)
    dispatcher.poll()

    job = app.get_job("job_1")
    assert job.state == then and "status -9" in (job.error or "")
    assert backend.run_ids == (["job_1-1", "job_1-2"] if then == JobState.RETRYING else ["job_1-1"])


def test_a_runner_that_died_while_stopping_leaves_the_job_stopped_at_its_checkpoint(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp
) -> None:
    started()
    app.save_checkpoint("job_1", 1, 20, "users/usr_1/jobs/job_1/checkpoints/20/", now())
    app.report_progress("job_1", 1, 25, 100, 0.5, 1.0, 500, now())
    app.request_stop("job_1", "budget reached", now())
    backend.end_attempt("job_1-1", 1)
    dispatcher.poll()
    job = app.get_job("job_1")
    assert (job.state, job.step, job.stop_reason) == (JobState.STOPPED, 20, "budget reached")


def test_a_runner_that_never_starts_its_attempt_is_relaunched_once_then_the_job_fails(
    dispatcher: Dispatcher, backend: FakeBackend, launched, app: UserApp
) -> None:
    launched()
    backend.end_attempt("job_1-1", 2)
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1", "job_1-1"] and app.get_job("job_1").state == JobState.QUEUED
    backend.end_attempt("job_1-1", 2)
    dispatcher.poll()
    job = app.get_job("job_1")
    assert job.state == JobState.FAILED and "could not start" in (job.error or "")


def test_a_refused_launch_counts_as_a_start_failure(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp
) -> None:
    submitted()
    backend.refuse = True
    dispatcher.submit("usr_1", "job_1")
    dispatcher.poll()
    assert dispatcher.queued() == [JobRef("usr_1", "job_1")]
    dispatcher.poll()
    job = app.get_job("job_1")
    assert job.state == JobState.FAILED and "no capacity" in (job.error or "")


def test_run_polls_until_told_to_stop_and_close_starts_nothing_new(
    dispatcher: Dispatcher, backend: FakeBackend, submitted
) -> None:
    dispatcher.poll_interval_s = 0.01
    stop = threading.Event()
    loop = threading.Thread(target=dispatcher.run, args=(stop,))
    loop.start()
    submitted("job_a")
    dispatcher.submit("usr_1", "job_a")
    wait_for(lambda: backend.launched, timeout=5)
    stop.set()
    loop.join(timeout=5)
    assert not loop.is_alive()

    submitted("job_b")
    dispatcher.submit("usr_1", "job_b")
    dispatcher.close()
    assert backend.closed and backend.run_ids == ["job_a-1"]
    assert dispatcher.running() == {}


def test_each_launch_is_announced_with_its_run_spec(
    local_bucket: LocalBucket, app: UserApp, backend: FakeBackend, submitted
) -> None:
    launched = []
    dispatcher = Dispatcher(local_bucket, backend, open_app=lambda user_id: app, on_launch=launched.append)
    submitted(heartbeat_interval_seconds=0.5)
    dispatcher.submit("usr_1", "job_1")
    dispatcher.poll()
    [spec] = launched
    assert (spec.user_id, spec.job_id, spec.attempt, spec.heartbeat_interval_s) == ("usr_1", "job_1", 1, 0.5)


def test_a_job_retried_elsewhere_while_its_runner_goes_on_ends_that_run_then_starts_the_next_attempt(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp
) -> None:
    started()
    app.mark_lost("job_1", None, now())  # the ledger heard nothing for too long...
    app.retry_job("job_1", 2, "lost", now())
    dispatcher.submit("usr_1", "job_1")  # ...and hands the job back
    assert backend.stopped == [backend.launched[0].run_id]

    backend.end_attempt("job_1-1", 0)  # the old runner saw it was superseded and ended
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1", "job_1-2"]


# ---- pause and resume ----

CHECKPOINT_30 = "users/usr_1/jobs/job_1/attempts/1/checkpoints/30/"


def test_a_resumed_job_is_relaunched_as_a_new_attempt_from_the_checkpoint_its_pause_saved(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp, local_bucket: LocalBucket
) -> None:
    started(max_retries=0)  # a resume is not a retry: it needs none of the retry budget
    app.save_checkpoint("job_1", 1, 30, CHECKPOINT_30, now())
    app.request_pause("job_1", now())
    app.mark_paused("job_1", now())  # what the runner records once its trainer checkpointed
    backend.end_attempt("job_1-1")
    dispatcher.poll()
    assert (app.get_job("job_1").state, backend.run_ids, dispatcher.queued()) == (
        JobState.PAUSED,
        ["job_1-1"],
        [],
    )  # paused: nothing relaunched, nothing queued

    app.resume_job("job_1", now())
    dispatcher.submit("usr_1", "job_1")  # the API hands the resumed job back
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1", "job_1-2"]
    spec = read_job_run(local_bucket, backend.launched[1].run_object)
    assert (spec.attempt, spec.resume_from) == (2, CHECKPOINT_30)
    app.start_job("job_1", 2, now())
    backend.end_attempt("job_1-2", -9)  # a crash of the resumed attempt may still be retried
    dispatcher.poll()
    assert app.get_job("job_1").state == JobState.FAILED  # max_retries 0: no retry left, as before


def test_a_job_resumed_before_its_paused_run_is_reaped_is_launched_after_it(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp
) -> None:
    started()
    app.request_pause("job_1", now())
    app.mark_paused("job_1", now())
    app.resume_job("job_1", now())
    dispatcher.submit("usr_1", "job_1")  # its run is still going: nothing to do yet
    assert backend.run_ids == ["job_1-1"]
    backend.end_attempt("job_1-1")
    dispatcher.poll()
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1", "job_1-2"]


def test_a_runner_that_died_while_pausing_leaves_the_job_paused_at_its_checkpoint(
    dispatcher: Dispatcher, backend: FakeBackend, started, app: UserApp
) -> None:
    started()
    app.save_checkpoint("job_1", 1, 30, CHECKPOINT_30, now())
    app.report_progress("job_1", 1, 35, 100, 0.5, 1.0, 500, now())
    app.request_pause("job_1", now())
    backend.end_attempt("job_1-1", 1)
    dispatcher.poll()
    job = app.get_job("job_1")
    assert (job.state, job.step, backend.run_ids) == (JobState.PAUSED, 30, ["job_1-1"])


def test_a_job_paused_while_queued_is_not_launched_until_resumed_then_starts_at_attempt_1(
    dispatcher: Dispatcher, backend: FakeBackend, submitted, app: UserApp, local_bucket: LocalBucket
) -> None:
    submitted()
    dispatcher.submit("usr_1", "job_1")
    app.request_pause("job_1", now())
    dispatcher.poll()
    assert backend.launched == [] and app.get_job("job_1").state == JobState.PAUSED
    app.resume_job("job_1", now())
    dispatcher.submit("usr_1", "job_1")
    dispatcher.poll()
    assert backend.run_ids == ["job_1-1"]
    assert read_job_run(local_bucket, backend.launched[0].run_object).resume_from is None  # from step 0


def _alive(job_id: str, attempt: int, run_id: str) -> AliveRun:
    placement = Placement(gpu_type="cpu", gpu_count=1, node="fake")
    return AliveRun(run_id=run_id, user_id="usr_1", job_id=job_id, attempt=attempt, placement=placement)


def test_after_a_restart_a_run_still_going_is_adopted_not_launched_again(
    local_bucket: LocalBucket, app: UserApp, submitted
) -> None:
    """The old dispatcher was SIGKILLed while job_1's runner trained on: a new one adopts that run (by
    its run id), launches nothing for job_1, counts its slot, and reads its outcome when it ends."""
    submitted("job_1")
    submitted("job_2")
    for job_id in ("job_1", "job_2"):
        app.queue_job(job_id, now())
    app.start_job("job_1", 1, now())
    backend = FakeBackend(alive=[_alive("job_1", 1, "job_1-1-aaa")])
    dispatcher = Dispatcher(local_bucket, backend, open_app=lambda user_id: app, max_concurrent=1)

    assert dispatcher.adopt_alive() == 1
    for job_id in ("job_1", "job_2"):  # what runners.recovery hands it from the views
        dispatcher.submit("usr_1", job_id)
    dispatcher.poll()
    assert backend.launched == [] and backend.stopped == []  # job_1 runs on; job_2 waits for its slot
    assert dispatcher.running() == {JobRef("usr_1", "job_1"): "job_1-1-aaa"}

    app.mark_succeeded("job_1", now())
    backend.end("job_1-1-aaa")
    dispatcher.poll()
    assert app.get_job("job_1").state == JobState.SUCCEEDED
    assert backend.run_ids == ["job_2-1"]


def test_after_a_restart_a_run_whose_job_moved_on_is_adopted_and_asked_to_end(
    local_bucket: LocalBucket, app: UserApp, submitted
) -> None:
    submitted("job_1")
    app.queue_job("job_1", now())
    app.start_job("job_1", 1, now())
    app.retry_job("job_1", 2, "lost", now())  # the ledger found attempt 1 lost meanwhile
    backend = FakeBackend(alive=[_alive("job_1", 1, "job_1-1-old")])
    dispatcher = Dispatcher(local_bucket, backend, open_app=lambda user_id: app, max_concurrent=1)

    assert dispatcher.adopt_alive() == 1
    assert backend.stopped == ["job_1-1-old"]
    dispatcher.submit("usr_1", "job_1")
    dispatcher.poll()
    assert backend.launched == []  # attempt 2 waits until the old run is reaped
    backend.end("job_1-1-old", -15)
    dispatcher.poll()
    dispatcher.poll()
    assert backend.run_ids == ["job_1-2"]
