"""Ledger properties: exact billing under duplicates, reordering, retries and price changes;
replay equals the projection; a limit is passed by at most one heartbeat interval of cost."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.job import JobState
from domain.money import cost_usd_micros, period_of
from projections.replay import replay
from storage.heartbeats import Heartbeat
from storage.layout import user_partition
from tests.unit.ledger.builders import A100, T0, Platform, sign

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MONTH_END = datetime(2026, 3, 31, 23, 57, tzinfo=UTC)
JOBS = ("j1", "j2", "j3")
SKEWS = st.sampled_from([timedelta()] * 12 + [timedelta(days=31), timedelta(days=-31), timedelta(minutes=10)])


# ---- strategies -------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Price changes, jobs with 1-3 attempts of heartbeats, and how they are delivered."""
    start = draw(st.sampled_from([T0, MONTH_END]))  # sometimes across a month boundary
    changes = draw(st.lists(st.tuples(st.integers(5, 240), st.integers(0, 9_000_000)), max_size=3))
    jobs: dict[str, dict[str, Any]] = {}
    for job_id in JOBS[: draw(st.integers(1, 3))]:
        attempts = []
        at = start + timedelta(seconds=draw(st.integers(0, 30)))
        for _ in range(draw(st.integers(1, 3))):
            beats = []
            for seq in range(1, draw(st.integers(0, 8)) + 1):
                gpu_ms = draw(st.integers(0, 60_000))
                at += timedelta(milliseconds=gpu_ms + draw(st.integers(0, 5_000)))
                beats.append((seq, gpu_ms, at + draw(SKEWS), at))  # sometimes a runner's clock is off
            attempts.append(beats)
        jobs[job_id] = {"gpu_count": draw(st.integers(1, 8)), "attempts": attempts}
    return {"start": start, "changes": changes, "jobs": jobs, "seed": draw(st.randoms(use_true_random=False))}


def heartbeats(scenario: dict[str, Any]) -> dict[str, list[Heartbeat]]:
    """Each job's heartbeats in publication order (attempt by attempt, seq by seq)."""
    return {
        job_id: [
            sign(Heartbeat(user_id="u1", job_id=job_id, attempt=attempt, seq=seq, gpu_type=A100,
                           gpu_count=job["gpu_count"], gpu_ms=gpu_ms, step=seq, loss=None, tokens=0, at=at,
                           final=seq == len(beats)))
            for attempt, beats in enumerate(job["attempts"], start=1)
            for seq, gpu_ms, at, _ in beats
        ]
        for job_id, job in scenario["jobs"].items()
    }  # fmt: skip


def deliveries(streams: dict[str, list[Heartbeat]], rnd: Any, *, in_order: bool) -> list[list[Heartbeat]]:
    """Batches as a transport might hand them over: jobs interleaved, repeats (redelivery, a
    runner republishing), each batch shuffled. ``in_order``: every job's first deliveries keep
    publication order across batches (the transports' contract); else anything goes."""
    cursors = {job_id: 0 for job_id in streams}
    sent: list[Heartbeat] = []
    order: list[Heartbeat] = []
    while any(cursors[j] < len(s) for j, s in streams.items()):
        job_id = rnd.choice([j for j, s in streams.items() if cursors[j] < len(s)])
        heartbeat = streams[job_id][cursors[job_id]]
        cursors[job_id] += 1
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


def expected_cost(platform: Platform, billed: list[Heartbeat]) -> tuple[dict[str, int], dict[str, int]]:
    """Per job and per period: the money rule applied to the billed heartbeats' usage groups."""
    groups: dict[tuple[str, str, int, int], int] = defaultdict(int)
    for h in billed:
        price = platform.platform.price_at(h.gpu_type, h.at)
        groups[(period_of(h.at), h.job_id, h.gpu_count, price)] += h.gpu_ms
    by_job: dict[str, int] = defaultdict(int)
    by_period: dict[str, int] = defaultdict(int)
    for (period, job_id, count, price), ms in groups.items():
        cost = cost_usd_micros(ms, count, price)
        by_job[job_id] += cost
        by_period[period] += cost
    return by_job, by_period


class ClockRule:
    """The README's bounded-clock rule, folded independently of the ledger: a heartbeat dated more
    than ``BOUND`` from its batch's receive time is billed at the receive time; from the first
    billed heartbeat of an attempt (its anchor), the attempt's billed ``gpu_ms x gpu_count`` is at
    most ``(at - anchor + TOLERANCE) x`` the job's GPU count."""

    BOUND = timedelta(minutes=5)
    TOLERANCE_MS = 2_000

    def __init__(self, gpu_counts: dict[str, int]) -> None:
        self.gpu_counts = gpu_counts
        self.anchors: dict[tuple[str, int], datetime] = {}
        self.claimed: dict[tuple[str, int], int] = defaultdict(int)

    def bill(self, h: Heartbeat, received: datetime) -> Heartbeat:
        at = h.at if abs(h.at - received) <= self.BOUND else received
        gpu_ms, key = h.gpu_ms, (h.job_id, h.attempt)
        if key not in self.anchors:
            self.anchors[key] = at
        else:
            wall_ms = max(0, (at - self.anchors[key]) // timedelta(milliseconds=1))
            left = (wall_ms + self.TOLERANCE_MS) * self.gpu_counts[h.job_id] - self.claimed[key]
            gpu_ms = min(gpu_ms, max(0, left) // h.gpu_count)
            self.claimed[key] += gpu_ms * h.gpu_count
        return msgspec.structs.replace(h, at=at, gpu_ms=gpu_ms)


def sent_at(scenario: dict[str, Any]) -> dict[tuple[str, int, int], datetime]:
    """When each heartbeat was really sent (its ``at`` before its runner's clock skew)."""
    return {
        (job_id, attempt, seq): sent
        for job_id, job in scenario["jobs"].items()
        for attempt, beats in enumerate(job["attempts"], start=1)
        for seq, _, _, sent in beats
    }


def receive(platform: Platform, batch: list[Heartbeat], sent: dict[Any, datetime]) -> datetime:
    """The ledger's clock as ``batch`` arrives: a moment after its newest heartbeat was sent."""
    newest = max(sent[h.key] for h in batch)
    platform.clock.now = max(platform.clock.now, newest + timedelta(milliseconds=50))
    return platform.clock.now


def check_billing(platform: Platform, billed: list[Heartbeat]) -> None:
    by_job, by_period = expected_cost(platform, billed)
    app = platform.user_app("u1")
    for job_id in JOBS:
        if any(h.job_id == job_id for h in billed) or job_id in by_job:
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


# ---- properties --------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_billed_cost_is_exact_for_duplicated_reordered_retried_streams(scenario: dict[str, Any]) -> None:
    platform = build(scenario)
    streams = heartbeats(scenario)
    worker = platform.worker()
    sent = sent_at(scenario)
    rule = ClockRule({job_id: job["gpu_count"] for job_id, job in scenario["jobs"].items()})
    billed: dict[tuple[str, int, int], Heartbeat] = {}
    for batch in deliveries(streams, scenario["seed"], in_order=True):
        received = receive(platform, batch, sent)
        worker.handle(batch)
        for h in sorted(batch, key=lambda h: h.key):  # metered in (job, attempt, seq) order
            if h.key not in billed:
                billed[h.key] = rule.bill(h, received)
    every = [h for s in streams.values() for h in s]
    assert worker.stats.rejected == 0
    assert worker.stats.metered == len(every) == len(billed)
    check_billing(platform, list(billed.values()))


@SETTINGS
@given(scenarios())
def test_out_of_order_delivery_bills_exactly_what_came_above_the_high_water_mark(
    scenario: dict[str, Any],
) -> None:
    platform = build(scenario)
    worker = platform.worker()
    sent = sent_at(scenario)
    rule = ClockRule({job_id: job["gpu_count"] for job_id, job in scenario["jobs"].items()})
    mark: dict[tuple[str, int], int] = {}
    billed: dict[tuple[str, int, int], Heartbeat] = {}
    for batch in deliveries(heartbeats(scenario), scenario["seed"], in_order=False):
        received = receive(platform, batch, sent)
        worker.handle(batch)
        for h in sorted(batch, key=lambda h: h.key):  # billed iff above every seq of its attempt before
            if h.seq > mark.get((h.job_id, h.attempt), 0) and h.key not in billed:
                billed[h.key] = rule.bill(h, received)
        for h in batch:
            mark[(h.job_id, h.attempt)] = max(mark.get((h.job_id, h.attempt), 0), h.seq)
    check_billing(platform, list(billed.values()))


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
    at, ms = T0, 0
    ended: set[str] = set()
    for tick in range(40):
        for job_id in job_ids:
            if job_id in ended:
                continue
            stopping = app.get_job(job_id).state == JobState.STOPPING
            seqs[job_id] += 1
            gpu_ms = int(ms * run["tail"]) if stopping else ms
            worker.handle([sign(Heartbeat(user_id="u1", job_id=job_id, attempt=1, seq=seqs[job_id],
                                          gpu_type="h100-80gb", gpu_count=count, gpu_ms=gpu_ms, step=tick,
                                          loss=None, tokens=0, at=at, final=stopping))])  # fmt: skip
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
