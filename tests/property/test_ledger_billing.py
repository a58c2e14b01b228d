"""Ledger properties: exact billing of cumulative heartbeats under duplicates, reordering, losses,
retries, skewed clocks, forged signatures and price changes; replay equals the projection, and the
raw heartbeat archive recomputes every metered usage (the metering audit is clean); a lost
or late heartbeat loses nothing and the final one settles its attempt; a limit is passed by at most
one heartbeat interval of cost."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.job import JobState
from domain.money import cost_usd_micros, period_of
from projections.metering_audit import audit_metering
from projections.replay import read_events, replay
from storage.heartbeats import Heartbeat, attempt_secret, verify_heartbeat
from storage.layout import user_partition
from tests.unit.ledger.builders import A100, HEARTBEAT_KEY, T0, Platform, sign

H100 = "h100-80gb"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MONTH_END = datetime(2026, 3, 31, 23, 57, tzinfo=UTC)
JOBS = ("j1", "j2", "j3")
SKEWS = st.sampled_from([timedelta()] * 12 + [timedelta(days=31), timedelta(days=-31), timedelta(minutes=10)])


# ---- strategies -------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn, skews: st.SearchStrategy[timedelta] = SKEWS) -> dict[str, Any]:
    """Price changes, jobs with 1-3 attempts of cumulative heartbeats, which are lost (never the
    final one), and how they are delivered."""
    start = draw(st.sampled_from([T0, MONTH_END]))  # sometimes across a month boundary
    changes = draw(st.lists(st.tuples(st.integers(5, 240), st.integers(0, 9_000_000)), max_size=3))
    jobs: dict[str, dict[str, Any]] = {}
    for job_id in JOBS[: draw(st.integers(1, 3))]:
        attempts = []
        at = start + timedelta(seconds=draw(st.integers(0, 30)))
        for _ in range(draw(st.integers(1, 3))):
            beats, total = [], 0
            n = draw(st.integers(0, 8))
            for seq in range(1, n + 1):
                gpu_ms = draw(st.integers(0, 60_000))
                at += timedelta(milliseconds=gpu_ms + draw(st.integers(0, 5_000)))
                total += gpu_ms
                lost = seq < n and draw(st.integers(0, 4)) == 0  # a lost heartbeat, never the final
                beats.append((seq, total, at + draw(skews), at, lost))  # sometimes a runner's clock is off
            attempts.append(beats)
        jobs[job_id] = {"gpu_count": draw(st.integers(1, 8)), "attempts": attempts}
    return {"start": start, "changes": changes, "jobs": jobs, "seed": draw(st.randoms(use_true_random=False))}


def heartbeats(scenario: dict[str, Any]) -> dict[str, list[Heartbeat]]:
    """Each job's heartbeats that are not lost, in publication order (attempt by attempt, seq by seq)."""
    return {
        job_id: [
            sign(Heartbeat(user_id="u1", job_id=job_id, attempt=attempt, seq=seq, gpu_type=A100,
                           gpu_count=job["gpu_count"], gpu_ms_total=total, step=seq, loss=None, tokens=0,
                           at=at, final=seq == len(beats)))
            for attempt, beats in enumerate(job["attempts"], start=1)
            for seq, total, at, _, lost in beats
            if not lost
        ]
        for job_id, job in scenario["jobs"].items()
    }  # fmt: skip


def forged(heartbeat: Heartbeat, rnd: Any) -> Heartbeat:
    """A copy anyone who can publish could send: more GPU time under the old signature, or signed
    with a key that is not the platform's."""
    if rnd.random() < 0.5:
        return msgspec.structs.replace(heartbeat, gpu_ms_total=heartbeat.gpu_ms_total + 3_600_000)
    return sign(
        msgspec.structs.replace(heartbeat, gpu_ms_total=heartbeat.gpu_ms_total * 2 + 1), b"not-the-key"
    )


def deliveries(streams: dict[str, list[Heartbeat]], rnd: Any, *, in_order: bool) -> list[list[Heartbeat]]:
    """Batches as a transport might hand them over: jobs interleaved, repeats (redelivery, a
    runner republishing), forgeries, each batch shuffled. ``in_order``: every job's first
    deliveries keep publication order across batches (the transports' contract); else anything goes."""
    cursors = {job_id: 0 for job_id in streams}
    sent: list[Heartbeat] = []
    order: list[Heartbeat] = []
    while any(cursors[j] < len(s) for j, s in streams.items()):
        job_id = rnd.choice([j for j, s in streams.items() if cursors[j] < len(s)])
        heartbeat = streams[job_id][cursors[job_id]]
        cursors[job_id] += 1
        if rnd.random() < 0.1:  # a forgery ahead of the real one
            order.append(forged(heartbeat, rnd))
        order.append(heartbeat)
        sent.append(heartbeat)
        if rnd.random() < 0.3:  # a runner republishing after a failed flush, or a redelivery
            order.append(heartbeat)
        if sent and rnd.random() < 0.2:  # redelivery of something older
            order.append(rnd.choice(sent))
    if not in_order:
        rnd.shuffle(order)
    batches, i = [], 0
    while i < len(order):
        size = rnd.randint(1, 12)
        batch = order[i : i + size]
        rnd.shuffle(batch)  # reordering within a batch (and within a job)
        batches.append(batch)
        i += size
    return batches


# ---- the world ---------------------------------------------------------------------------


def build(scenario: dict[str, Any]) -> Platform:
    platform = Platform()
    effective = scenario["start"]
    for minutes, price in scenario["changes"]:
        effective += timedelta(minutes=minutes)
        platform.set_price(A100, price, effective)
    app = platform.user_app("u1")
    for job_id, job in scenario["jobs"].items():
        platform.running_job("u1", job_id, gpu_count=job["gpu_count"], at=T0 - timedelta(days=1))
        for attempt in range(2, len(job["attempts"]) + 1):  # the runner's retries, all started
            app.retry_job(job_id, attempt, "retry", T0)
            app.start_job(job_id, attempt, T0)
    return platform


class Fold:
    """The README's rules, folded independently of the ledger, batch by batch as it receives them:

    - only heartbeats signed with their attempt's secret count;
    - a heartbeat dated more than ``BOUND`` from its batch's receive time counts at the receive time;
    - per attempt, in seq order, a heartbeat above the highest seq counted so far adds the increase
      of its cumulative total over the total counted so far (never negative), the total first
      bounded: the attempt's first counted heartbeat (its anchor) as it is, each later one to
      ``anchor total + (at - anchor at + TOLERANCE) x the job's GPU count // its GPU count``;
    - each increase is priced at its heartbeat's time, in its month, and each usage group
      ``(period, job, GPU count, price)`` costs the money rule of its summed milliseconds."""

    BOUND = timedelta(minutes=5)
    TOLERANCE_MS = 2_000

    def __init__(self, platform: Platform, gpu_counts: dict[str, int]) -> None:
        self.platform, self.gpu_counts = platform, gpu_counts
        self.mark: dict[tuple[str, int], int] = {}
        self.total: dict[tuple[str, int], int] = defaultdict(int)
        self.anchor: dict[tuple[str, int], tuple[datetime, int]] = {}
        self.groups: dict[tuple[str, str, int, int], int] = defaultdict(int)

    def receive(self, batch: list[Heartbeat], received: datetime) -> None:
        def authentic(h: Heartbeat) -> bool:
            return verify_heartbeat(h, attempt_secret(HEARTBEAT_KEY, h.user_id, h.job_id, h.attempt))

        for h in sorted((h for h in batch if authentic(h)), key=lambda h: h.key):
            key = (h.job_id, h.attempt)
            if h.seq <= self.mark.get(key, 0):
                continue  # a repeat, or below what was counted
            at = h.at if abs(h.at - received) <= self.BOUND else received
            counted = h.gpu_ms_total
            if key not in self.anchor:
                self.anchor[key] = (at, counted)
            else:
                anchor_at, anchor_ms = self.anchor[key]
                wall_ms = max(0, (at - anchor_at) // timedelta(milliseconds=1))
                allowed = anchor_ms + (wall_ms + self.TOLERANCE_MS) * self.gpu_counts[h.job_id] // h.gpu_count
                counted = min(counted, allowed)
            increase = max(0, counted - self.total[key])
            self.total[key] += increase
            self.mark[key] = h.seq
            price = self.platform.platform.price_at(h.gpu_type, at)
            self.groups[(period_of(at), h.job_id, h.gpu_count, price)] += increase

    def costs(self) -> tuple[dict[str, int], dict[str, int]]:
        """Per job and per period, in micro-dollars."""
        by_job: dict[str, int] = defaultdict(int)
        by_period: dict[str, int] = defaultdict(int)
        for (period, job_id, count, price), ms in self.groups.items():
            cost = cost_usd_micros(ms, count, price)
            by_job[job_id] += cost
            by_period[period] += cost
        return by_job, by_period


def sent_at(scenario: dict[str, Any]) -> dict[tuple[str, int, int], datetime]:
    """When each heartbeat was really sent (its ``at`` before its runner's clock skew)."""
    return {
        (job_id, attempt, seq): sent
        for job_id, job in scenario["jobs"].items()
        for attempt, beats in enumerate(job["attempts"], start=1)
        for seq, _, _, sent, _ in beats
    }


def receive(platform: Platform, batch: list[Heartbeat], sent: dict[Any, datetime]) -> datetime:
    """The ledger's clock as ``batch`` arrives: a moment after its newest heartbeat was sent."""
    newest = max(sent[h.key] for h in batch)
    platform.clock.now = max(platform.clock.now, newest + timedelta(milliseconds=50))
    return platform.clock.now


def check_billing(platform: Platform, fold: Fold) -> None:
    by_job, by_period = fold.costs()
    app = platform.user_app("u1")
    for job_id in JOBS:
        if job_id in by_job:
            assert app.get_job(job_id).cost_usd_micros == by_job[job_id]
    partition = user_partition("u1")
    part = replay(app, partition)
    for period, total in by_period.items():
        assert part.billing.periods[period].total_usd_micros == total
    if by_period:
        current = platform.billing_json("u1")["current_period"]
        assert current["total_cost_usd_micros"] == by_period[max(by_period)]
    platform.projector.catch_up(partition)
    for name in part.views.names():  # replay from position 0 == what the projector wrote
        assert platform.bucket.read(name) == part.views.render(name), name
    audit = audit_metering(platform.bucket, (e for _, e in read_events(app)), HEARTBEAT_KEY)
    assert audit.ok, audit.differences  # each batch's archive (one object per user) gives the usage again
    assert audit.not_archived == 0


def metered_ms(platform: Platform, job_id: str) -> dict[int, int]:
    """Per attempt: the GPU ms per GPU the job's events metered."""
    return {a: m.ms for a, m in platform.user_app("u1").repository.get(_job_id(job_id)).meters().items()}


def _job_id(job_id: str) -> Any:
    from domain.job import Job

    return Job.create_id(job_id)


# ---- properties --------------------------------------------------------------------------


def run_and_fold(scenario: dict[str, Any], *, in_order: bool) -> tuple[Platform, Fold, Any]:
    platform = build(scenario)
    worker = platform.worker()
    sent = sent_at(scenario)
    fold = Fold(platform, {job_id: job["gpu_count"] for job_id, job in scenario["jobs"].items()})
    for batch in deliveries(heartbeats(scenario), scenario["seed"], in_order=in_order):
        received = receive(platform, batch, sent)
        worker.handle(batch)
        fold.receive(batch, received)
    return platform, fold, worker


@SETTINGS
@given(scenarios())
def test_charged_is_the_fold_for_duplicated_reordered_lossy_forged_skewed_streams(
    scenario: dict[str, Any],
) -> None:
    platform, fold, worker = run_and_fold(scenario, in_order=True)
    assert worker.stats.rejected == 0
    check_billing(platform, fold)
    for job_id in scenario["jobs"]:
        assert metered_ms(platform, job_id) == {a: ms for (j, a), ms in fold.total.items() if j == job_id}


@SETTINGS
@given(scenarios())
def test_out_of_order_delivery_charges_the_fold_too(scenario: dict[str, Any]) -> None:
    platform, fold, _ = run_and_fold(scenario, in_order=False)
    check_billing(platform, fold)


def prompt_deliveries(
    streams: dict[str, list[Heartbeat]], sent: dict[Any, datetime], rnd: Any
) -> list[list[Heartbeat]]:
    """Batches of what was sent within 2 minutes, in time order, each shuffled, with repeats and
    forgeries; some heartbeats come one batch late (after later ones of their attempt, within the
    clock bound)."""
    every = sorted((h for s in streams.values() for h in s), key=lambda h: sent[h.key])
    batches: list[list[Heartbeat]] = []
    late: list[Heartbeat] = []
    window = datetime.min.replace(tzinfo=UTC)
    for h in every:
        if sent[h.key] - window > timedelta(minutes=2):
            batches.append(late)
            late, window = [], sent[h.key]
        batch = batches[-1]
        if rnd.random() < 0.1:
            batch.append(forged(h, rnd))
        (late if rnd.random() < 0.2 else batch).append(h)
        if rnd.random() < 0.2:
            batch.append(h)  # a repeat
    batches.append(late)
    for batch in batches:
        rnd.shuffle(batch)
    return [batch for batch in batches if batch]


@SETTINGS
@given(scenarios(skews=st.just(timedelta())))
def test_honest_clocks_settle_every_attempt_at_its_final_total_whatever_was_lost_or_late(
    scenario: dict[str, Any],
) -> None:
    """Runners whose clocks are right, a transport that delivers within the clock bound: whatever
    was lost, repeated, forged or came late, the metered total of each attempt is exactly the GPU
    time its final heartbeat reported, and the charge is the fold's."""
    platform = build(scenario)
    worker = platform.worker()
    sent = sent_at(scenario)
    fold = Fold(platform, {job_id: job["gpu_count"] for job_id, job in scenario["jobs"].items()})
    for batch in prompt_deliveries(heartbeats(scenario), sent, scenario["seed"]):
        received = max(sent[h.key] for h in batch) + timedelta(milliseconds=50)
        platform.clock.now = received
        worker.handle(batch)
        fold.receive(batch, received)
    assert worker.stats.gpu_clamped == worker.stats.clock_clamped == 0
    for job_id, job in scenario["jobs"].items():
        finals = {a: beats[-1][1] for a, beats in enumerate(job["attempts"], start=1) if beats}
        assert metered_ms(platform, job_id) == finals
    check_billing(platform, fold)


@st.composite
def limited_runs(draw: st.DrawFn) -> dict[str, Any]:
    interval_s, count, price = (
        draw(st.sampled_from([1, 5, 10, 30])),
        draw(st.integers(1, 8)),
        draw(st.integers(100_000, 9_000_000)),
    )
    per_interval = cost_usd_micros(interval_s * 1000, count, price)

    def limit() -> st.SearchStrategy[int | None]:  # reached within a few intervals, anywhere inside one
        return st.none() | st.builds(
            lambda k, r: k * per_interval + r, st.integers(0, 12), st.integers(1, per_interval)
        )

    return {
        "interval_s": interval_s,
        "gpu_count": count,
        "price": price,
        "jobs": draw(st.integers(1, 3)),
        "max_cost": draw(limit()),
        "budget": draw(limit()),
        "jitter": draw(st.lists(st.floats(0.5, 1.0), min_size=1, max_size=5)),
        "tail": draw(st.floats(0.0, 1.0)),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limited_runs())
def test_a_limit_is_passed_by_at_most_one_heartbeat_interval(run: dict[str, Any]) -> None:
    """Runners announce themselves with a zero heartbeat, beat every interval (or a bit sooner),
    and stop at their next heartbeat once asked (its milliseconds include the checkpoint)."""
    platform = Platform()
    platform.set_price("h100-80gb", run["price"], T0 - timedelta(days=2))
    app = platform.user_app("u1")
    if run["budget"] is not None:
        app.set_budget(run["budget"], T0)
    interval_ms = run["interval_s"] * 1000
    count = run["gpu_count"]
    job_ids = [f"j{i}" for i in range(run["jobs"])]
    for job_id in job_ids:
        platform.running_job("u1", job_id, gpu_type="h100-80gb", gpu_count=count,
                             max_cost_usd_micros=run["max_cost"], interval_s=run["interval_s"])  # fmt: skip
    worker = platform.worker()
    seqs = dict.fromkeys(job_ids, 0)
    totals = dict.fromkeys(job_ids, 0)  # each runner's cumulative GPU ms
    at, ms = T0, 0
    ended: set[str] = set()
    for tick in range(40):
        for job_id in job_ids:
            if job_id in ended:
                continue
            stopping = app.get_job(job_id).state == JobState.STOPPING
            seqs[job_id] += 1
            total = totals[job_id] + (int(ms * run["tail"]) if stopping else ms)
            totals[job_id] = total
            heartbeat = Heartbeat(user_id="u1", job_id=job_id, attempt=1, seq=seqs[job_id], gpu_type=H100,
                                  gpu_count=count, gpu_ms_total=total, step=tick, loss=None, tokens=0, at=at,
                                  final=stopping)  # fmt: skip
            worker.handle([sign(heartbeat)])
            if stopping:
                ended.add(job_id)
        if len(ended) == len(job_ids):
            break
        ms = int(interval_ms * run["jitter"][tick % len(run["jitter"])])
        at += timedelta(milliseconds=ms)
        platform.clock.advance(ms / 1000)
    one_interval = cost_usd_micros(interval_ms, count, run["price"]) + 1  # +1: rounding of a group's sum
    costs = [app.get_job(job_id).cost_usd_micros for job_id in job_ids]
    if run["max_cost"] is not None:
        assert max(costs) <= run["max_cost"] + one_interval
    if run["budget"] is not None:
        assert sum(costs) <= run["budget"] + len(job_ids) * one_interval  # one interval of each job
    if run["max_cost"] is None and run["budget"] is None:
        assert not ended
    else:
        assert ended == set(job_ids)  # every limit here is reached within 40 beats
        assert {app.get_job(job_id).stop_reason for job_id in job_ids} == {"budget_exceeded"}
