"""Hard caps end to end: the real trainer on tiny-llama, its runner's real signed heartbeats, the real
``LedgerWorker`` metering them, on a local bucket.

A dispatcher launches ``python -m runners.job_runner`` (local subprocess backend) on ``cpu``, priced
high (``PlatformApp.set_price``, from now on) so a cap is reached within seconds of CPU time. The
ledger, which derives each attempt's secret from the dispatcher's ``heartbeat_key``, meters the
runner's heartbeats, asks the job to stop (``budget_exceeded``) and credits (reason ``limit``) what
the runner used past the cap while it stopped:

- a job with ``max_cost``: stopped, its net cost <= ``max_cost``;
- a job under a monthly budget (``UserApp.set_budget``): stopped, the user's net spend in the
  period (billing.json's current period) <= the budget;
- the ``max_cost`` job again with its runner publishing straight to Google's Pub/Sub emulator (the
  dispatcher's ``heartbeat_url``, written into run.yaml), which the ledger subscribes to; nothing
  goes over the runner's stdout.

The figures are recomputed from the job's events by a fold of the test's own: charged = the priced
``UsageMetered`` groups, credited = charged less the groups priced net of their ``UsageCredited``
ms, net = charged - credited. The metered total equals the GPU time of the runner's final
heartbeat (the final heartbeat settles the attempt), and every heartbeat the ledger metered was
signed with the attempt's secret (the raw heartbeat archive holds them).
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.applications import PlatformApp, UserApp
from domain.job import LIMIT_CREDIT, Job, JobState
from domain.money import UsageGroupKey, cost_usd_micros, period_of
from projections.projector import Projector
from projections.render import decode
from runners.attempt_spec import read_job_run
from runners.backends import LocalSubprocessBackend
from runners.base_models import MARKER, resolve_base_model
from runners.dispatcher import Dispatcher
from runners.heartbeat_relay import STDOUT_URL
from runners.ledger import LedgerWorker
from runners.ledger.limits import STOP_REASON
from runners.workdir import upload_folder
from storage import LocalBucket, layout
from storage.eventstore import open_platform, open_user
from storage.heartbeats import (
    DirectTransport,
    Heartbeat,
    HeartbeatTransport,
    attempt_secret,
    decode_archive,
    open_heartbeat_transport,
    verify_heartbeat,
)
from tests.unit.ledger.builders import HEARTBEAT_KEY
from tests.unit.runners.builders import RecordingPublisher, seed_dataset, submit_job, wait_for

pytestmark = pytest.mark.slow

USER, JOB = "usr_1", "job_1"
INTERVAL_S = 1.0
CPU_PRICE = 9_000_000
"""Micro-dollars per CPU-hour: $9, 2,500 micro-dollars a second."""
LIMIT = 30_000
"""$0.03: 12 s of CPU time (the trainer holds the "GPU" from the moment its process starts)."""
TRAIN = {
    "batch_size": 2,
    "learning_rate": 0.02,
    "lr_scheduler": "constant",
    "max_steps": 100_000,  # never reached: the cap ends the job
    "checkpoint_every_steps": 100_000,
    "heartbeat_interval_seconds": INTERVAL_S,
    "gpu_type": "cpu",
    "max_retries": 0,
}


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_base_model("tiny-llama", tmp_path_factory.mktemp("base-models"))


class CappedPlatform:
    """A bucket with tiny-llama, a dataset and a CPU price; a dispatcher and a ledger worker on threads.

    ``runner_url`` is the dispatcher's ``heartbeat_url`` (into run.yaml): ``stdout:`` relays each
    heartbeat line the runner prints into ``transport``'s publisher (as ``tune serve`` does); any
    other URL is where the runner publishes itself. The ledger reads ``transport``'s subscription.
    """

    def __init__(self, root: Path, tiny_llama: Path, transport: HeartbeatTransport, runner_url: str) -> None:
        self.root = root
        self.bucket = LocalBucket(root / "bucket")
        upload_folder(self.bucket, tiny_llama, "base-models/tiny-llama/", last=MARKER)
        self.platform: PlatformApp = open_platform(self.bucket)
        now = datetime.now(UTC)
        self.platform.set_price("cpu", CPU_PRICE, now, now)
        self.app: UserApp = open_user(self.bucket, USER)
        seed_dataset(self.bucket, self.app)
        self.projector = Projector(self.bucket, self._partition_app)
        self.relayed = RecordingPublisher()  # what came over the runner's stdout
        self._publisher = transport.publisher() if runner_url == STDOUT_URL else None
        backend = LocalSubprocessBackend(
            on_heartbeat=self._relay,
            log_dir=root / "runner-logs",
            env={"TUNE_HOME": str(root / "home"), "OMP_NUM_THREADS": "1"},
        )
        self.dispatcher = Dispatcher(
            self.bucket,
            backend,
            open_app=self._user_app,
            poll_interval_s=0.1,
            heartbeat_key=HEARTBEAT_KEY,
            heartbeat_url=runner_url,
            notify=self.projector.notify,
            on_launch=lambda spec: self.ledger.watch(
                spec.user_id, spec.job_id, spec.attempt, interval_s=spec.heartbeat_interval_s
            ),
        )
        self.ledger = LedgerWorker(
            self.bucket,
            self.platform,
            self._user_app,
            transport.subscriber(),
            self.projector,
            heartbeat_key=HEARTBEAT_KEY,
            on_retry=self.dispatcher.submit,
        )
        self._stop = threading.Event()
        self.projector.start(self._stop)
        self.ledger.start()
        self._loop = threading.Thread(target=self.dispatcher.run, args=(self._stop,), daemon=True)
        self._loop.start()

    def _user_app(self, user_id: str) -> UserApp:
        assert user_id == USER, user_id
        return self.app

    def _partition_app(self, partition: str) -> Any:
        return self.platform if partition == layout.PLATFORM else self.app

    def _relay(self, heartbeat: Heartbeat) -> None:
        self.relayed.publish(heartbeat)
        if self._publisher is not None:
            self._publisher.publish(heartbeat)

    def start(self, **config: object) -> None:
        submit_job(self.app, job_id=JOB, **{**TRAIN, **config})
        self.dispatcher.submit(USER, JOB)

    def job(self) -> Any:
        return self.app.get_job(JOB)

    def close(self) -> None:
        self._stop.set()
        self._loop.join(timeout=10)
        self.dispatcher.close(timeout=30)
        if self._publisher is not None:
            self._publisher.close()
        self.ledger.close()

    def run_until_capped(self) -> tuple[Any, list[Heartbeat]]:
        """Wait for the job to end, then for the ledger to meter the runner's final heartbeat;
        returns the job and the heartbeats the ledger archived (as they came, signed)."""
        job = wait_for(
            lambda: (j := self.job()).state in (JobState.STOPPED, JobState.FAILED, JobState.SUCCEEDED) and j,
            timeout=120,
            interval=0.2,
            what="the job to end",
        )
        assert job.state == JobState.STOPPED, self.diagnostics()
        final = wait_for(
            lambda: next((h for h in self.archived() if h.final), None),
            timeout=30,
            what="the final heartbeat archived",
        )
        wait_for(lambda: self.metered_seq() == final.seq, timeout=30, what="the final heartbeat metered")
        return self.job(), self.archived()

    def archived(self) -> list[Heartbeat]:
        """The job's heartbeats in the archive objects its ``UsageMetered`` events name."""
        names = dict.fromkeys(
            e.archive for e in self.events() if isinstance(e, Job.UsageMetered) and e.archive is not None
        )
        return [
            h
            for name in names
            for h in decode_archive(self.bucket.read(name)).heartbeats
            if (h.job_id, h.attempt) == (JOB, 1)
        ]

    def metered_seq(self) -> int:
        job = self.app.repository.get(Job.create_id(JOB))
        return int(job.metered_seq.get("1", 0))

    def events(self) -> list[Any]:
        return list(self.app.events.get(Job.create_id(JOB)))

    def diagnostics(self) -> str:
        logs = "\n".join(p.read_text() for p in sorted((self.root / "runner-logs").glob("*.log")))
        name = layout.attempt_log(USER, JOB, 1)
        job_log = self.bucket.read(name).decode() if self.bucket.exists(name) else "(none)"
        return f"{self.job()}\n--- job.log\n{job_log}\n--- runners\n{logs}"


@pytest.fixture
def direct(tmp_path: Path, tiny_llama_dir: Path) -> Iterator[CappedPlatform]:
    """The runner's heartbeats over its stdout, relayed into an in-process transport (``tune serve``)."""
    platform = CappedPlatform(
        tmp_path, tiny_llama_dir, DirectTransport(f"caps-{uuid.uuid4().hex[:8]}"), STDOUT_URL
    )
    yield platform
    platform.close()


@pytest.fixture
def over_pubsub(pubsub_emulator: str, tmp_path: Path, tiny_llama_dir: Path) -> Iterator[CappedPlatform]:
    """The runner publishes to a fresh topic on the Pub/Sub emulator; the ledger reads its subscription."""
    name = f"caps-{uuid.uuid4().hex[:12]}"
    url = f"pubsub://test-project/{name}/{name}-sub"
    platform = CappedPlatform(tmp_path, tiny_llama_dir, open_heartbeat_transport(url, create=True), url)
    yield platform
    platform.close()


class Figures:
    """A job's charged, credited and net micro-dollars, folded from its events by the test itself."""

    def __init__(self, events: list[Any]) -> None:
        metered: dict[UsageGroupKey, int] = defaultdict(int)
        credited: dict[UsageGroupKey, int] = defaultdict(int)
        self.credit_reasons: set[str] = set()
        for e in events:
            if isinstance(e, Job.UsageMetered | Job.UsageCredited):
                key = UsageGroupKey(e.period, JOB, e.gpu_type, e.gpu_count, e.usd_micros_per_hour)
                (metered if isinstance(e, Job.UsageMetered) else credited)[key] += e.gpu_ms
            if isinstance(e, Job.UsageCredited):
                self.credit_reasons.add(e.reason)
        self.gpu_ms = sum(metered.values())
        self.credited_gpu_ms = sum(credited.values())
        self.charged = sum(
            cost_usd_micros(ms, k.gpu_count, k.usd_micros_per_hour) for k, ms in metered.items()
        )
        self.net = sum(
            cost_usd_micros(ms - credited[k], k.gpu_count, k.usd_micros_per_hour) for k, ms in metered.items()
        )
        self.credited = self.charged - self.net
        self.periods = {k.period for k in metered}
        self.groups = set(metered)
        self.archived: list[Heartbeat] = []
        """The heartbeats the ledger archived (``check_capped`` sets them)."""

    def __str__(self) -> str:
        return (
            f"charged={self.charged} credited={self.credited} net={self.net} µ$ "
            f"({self.gpu_ms} ms metered, {self.credited_gpu_ms} ms credited)"
        )


def check_capped(platform: CappedPlatform, limit: int, what: str) -> Figures:
    """The job was stopped by the ledger for its limit and its net cost is within ``limit``."""
    job, archived = platform.run_until_capped()
    events = platform.events()
    figures = Figures(events)
    print(f"\n{what}: limit={limit} {figures} step={job.step} stop_reason={job.stop_reason}")

    # stopped by the ledger, for the limit
    assert job.state == JobState.STOPPED and job.stop_reason == STOP_REASON, platform.diagnostics()
    assert [e.reason for e in events if isinstance(e, Job.StopRequested)] == [STOP_REASON]
    assert platform.ledger.stats.stops == 1

    # priced on the placement (cpu x1) at the price set: one group, this period
    placed = {(k.gpu_type, k.gpu_count, k.usd_micros_per_hour) for k in figures.groups}
    assert placed == {("cpu", 1, CPU_PRICE)}, placed
    # the final heartbeat settles the attempt: everything the runner measured is metered
    final = max(archived, key=lambda h: h.seq)
    assert final.final and figures.gpu_ms == final.gpu_ms_total, (figures.gpu_ms, final)
    assert figures.charged == cost_usd_micros(final.gpu_ms_total, 1, CPU_PRICE)

    # the job's view agrees with the test's own fold: charged - credited = net
    assert (job.gpu_ms, job.credited_gpu_ms) == (figures.gpu_ms, figures.credited_gpu_ms)
    assert (job.cost_usd_micros, job.credited_usd_micros) == (figures.net, figures.credited)

    # the cap: net <= limit; whatever ran past it is credited for the limit, and nothing else is
    assert figures.net <= limit, figures
    if figures.charged > limit:
        # for the limit; on a loaded machine a slow runner may also have been taken for lost meanwhile
        # (a platform fault, credited too): never anything else
        assert figures.credit_reasons - {"lost"} <= {LIMIT_CREDIT} and figures.credited > 0, figures
        if "lost" not in figures.credit_reasons:  # no more credited than what ran past the limit
            assert figures.net >= limit - cost_usd_micros(1, 1, CPU_PRICE), figures
    else:
        assert figures.credit_reasons <= {"lost"}, figures
    # stopped early, but not much: within a few intervals of the limit
    assert figures.charged >= limit - cost_usd_micros(round(3 * INTERVAL_S * 1000), 1, CPU_PRICE), figures

    # every heartbeat the ledger metered was signed with the attempt's secret (none dropped)
    secret = attempt_secret(HEARTBEAT_KEY, USER, JOB, 1)
    assert archived and all(verify_heartbeat(h, secret) for h in archived)
    assert platform.ledger.stats.unsigned == platform.ledger.stats.forged == 0
    assert platform.ledger.stats.contradicting == platform.ledger.stats.superseded == 0
    figures.archived = archived
    return figures


def test_a_job_with_max_cost_is_stopped_by_the_ledger_and_nets_no_more_than_it(
    direct: CappedPlatform,
) -> None:
    direct.start(max_cost="0.03")
    figures = check_capped(direct, LIMIT, "max_cost over stdout")
    relayed = [h.seq for h in direct.relayed.of(JOB, 1)]
    assert relayed == list(range(1, len(relayed) + 1)) and relayed[-1] == max(h.seq for h in figures.archived)


def test_a_job_under_a_monthly_budget_is_stopped_with_the_users_spend_within_it(
    direct: CappedPlatform,
) -> None:
    direct.app.set_budget(LIMIT, datetime.now(UTC))
    direct.start()  # no max_cost: only the budget limits it
    figures = check_capped(direct, LIMIT, "monthly budget over stdout")
    (period,) = figures.periods
    assert period in {period_of(datetime.now(UTC) - timedelta(minutes=2)), period_of(datetime.now(UTC))}

    # the user's net spend in the period, as the user sees it (billing.json)
    partition = layout.user_partition(USER)
    direct.projector.catch_up(partition)
    billing = decode(direct.bucket.read(layout.billing(USER)))
    current = billing["current_period"]
    assert current["period"] == period, current
    assert current["total_cost_usd_micros"] == figures.net <= LIMIT, (current, str(figures))
    assert direct.app.get_job(JOB).cost_usd_micros == figures.net


@pytest.mark.pubsub
def test_over_pubsub_a_job_with_max_cost_is_stopped_by_the_ledger_and_nets_no_more_than_it(
    over_pubsub: CappedPlatform,
) -> None:
    over_pubsub.start(max_cost="0.03")
    figures = check_capped(over_pubsub, LIMIT, "max_cost over Pub/Sub")
    run = read_job_run(over_pubsub.bucket, layout.job_run(USER, JOB))
    assert run.heartbeat_url == over_pubsub.dispatcher.heartbeat_url
    assert run.heartbeat_url.startswith("pubsub://test-project/")
    assert not over_pubsub.relayed.heartbeats  # the runner published to Pub/Sub, never to its stdout
    assert figures.archived
