"""Credit properties over random heartbeat streams through the real ledger: ``max_cost`` and the
monthly budget are hard caps (net <= limit always), no group is credited more milliseconds than it
was charged, and charged, credited and net equal an independent fold of the events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.errors import Conflict
from domain.job import Job
from storage.heartbeats import Heartbeat
from tests.unit.ledger.builders import A100, T0, Platform, sign

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JOBS = ("j1", "j2", "j3")


def cost(ms: int, count: int, price: int) -> int:
    """The money rule, spelled again: round half up of ms x count x price / 3,600,000."""
    return (2 * ms * count * price + 3_600_000) // 7_200_000


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    jobs = {}
    for job_id in JOBS[: draw(st.integers(1, 3))]:
        beats, at = [], T0
        for seq in range(1, draw(st.integers(1, 10)) + 1):
            gpu_ms = draw(st.integers(0, 30_000))
            at += timedelta(milliseconds=gpu_ms + draw(st.integers(0, 2_000)))
            beats.append((seq, gpu_ms, at))
        jobs[job_id] = {
            "gpu_count": draw(st.integers(1, 4)),
            "max_cost": draw(st.none() | st.integers(0, 60_000)),
            "beats": beats,
            "lost_after": draw(st.none() | st.integers(0, len(beats))),  # the ledger gives it up there
            "checkpoint": draw(st.none() | st.integers(0, len(beats))),  # a checkpoint after that beat
        }
    return {"jobs": jobs, "budget": draw(st.none() | st.integers(1, 150_000)), "rnd": draw(st.randoms())}


def deliveries(scenario: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """What happens, in order: heartbeat batches (with repeats), checkpoints and losses, jobs interleaved."""
    rnd = scenario["rnd"]
    queues: dict[str, list[tuple[str, str, Any]]] = {}
    for job_id, job in scenario["jobs"].items():
        steps: list[tuple[str, str, Any]] = []
        total = 0
        for seq, gpu_ms, at in job["beats"]:
            total += gpu_ms
            steps.append(("beat", job_id, (seq, gpu_ms, at)))
            if job["checkpoint"] == seq:
                steps.append(("checkpoint", job_id, (seq, max(0, total - rnd.randint(0, 5_000)))))
            if job["lost_after"] == seq:
                steps.append(("lost", job_id, at))
        queues[job_id] = steps
    order = []
    while any(queues.values()):
        job_id = rnd.choice([j for j, q in queues.items() if q])
        order.append(queues[job_id].pop(0))
    return order


@SETTINGS
@given(scenarios())
def test_caps_hold_and_credits_fold_exactly(scenario: dict[str, Any]) -> None:
    platform = Platform()
    app = platform.user_app("u1")
    for job_id, job in scenario["jobs"].items():
        platform.running_job("u1", job_id, gpu_count=job["gpu_count"], max_cost_usd_micros=job["max_cost"])
    if scenario["budget"] is not None:
        app.set_budget(scenario["budget"], T0)
    worker = platform.worker()
    rnd = scenario["rnd"]
    batch: list[Heartbeat] = []
    totals = {  # heartbeats carry their attempt's cumulative GPU ms
        (job_id, seq): sum(ms for s, ms, _ in job["beats"] if s <= seq)
        for job_id, job in scenario["jobs"].items()
        for seq, _, _ in job["beats"]
    }

    def flush() -> None:
        if batch:
            platform.clock.now = max(platform.clock.now, *(h.at for h in batch))
            worker.handle(batch[:])
            batch.clear()

    for kind, job_id, data in deliveries(scenario):
        if kind == "beat":
            seq, _, at = data
            count = scenario["jobs"][job_id]["gpu_count"]
            total = totals[(job_id, seq)]
            fields = {"gpu_type": A100, "gpu_count": count, "gpu_ms_total": total, "loss": None, "tokens": 0}
            heartbeat = sign(Heartbeat(user_id="u1", job_id=job_id, attempt=1, seq=seq, step=seq, at=at,
                                       **fields))  # fmt: skip
            batch.append(heartbeat)
            if rnd.random() < 0.2:
                batch.append(heartbeat)  # a redelivery
            if rnd.random() < 0.5:
                flush()
            continue
        flush()
        try:
            if kind == "checkpoint":
                step, ms = data
                app.save_checkpoint(job_id, 1, step, f"ckpt/{step}", platform.clock(), gpu_ms_total=ms)
            else:
                app.mark_lost(job_id, None, platform.clock())
        except Conflict:
            pass  # stopped by a limit meanwhile: nothing to report on
    flush()

    # an independent fold of the events: charged and credited ms per (job, group)
    events = platform.events("u1")
    ids = {e.originator_id: e.job_id for e in events if isinstance(e, Job.Submitted)}
    charged: dict[tuple[Any, ...], int] = {}
    credited: dict[tuple[Any, ...], int] = {}
    for e in events:
        if isinstance(e, Job.UsageMetered | Job.UsageCredited):
            key = (ids[e.originator_id], e.period, e.gpu_count, e.usd_micros_per_hour)
            into = charged if isinstance(e, Job.UsageMetered) else credited
            into[key] = into.get(key, 0) + e.gpu_ms
            assert credited.get(key, 0) <= charged.get(key, 0)  # at every point of the log
    for reason in sorted({e.reason for e in events if isinstance(e, Job.UsageCredited)}):
        event(f"credited for {reason}")
    net = {k: cost(ms - credited.get(k, 0), k[2], k[3]) for k, ms in charged.items()}
    gross = {k: cost(ms, k[2], k[3]) for k, ms in charged.items()}

    for job_id, job in scenario["jobs"].items():
        view = platform.job("u1", job_id)
        mine = [k for k in charged if k[0] == job_id]
        assert view.cost_usd_micros == sum(net[k] for k in mine)
        assert view.credited_usd_micros == sum(gross[k] - net[k] for k in mine)
        assert view.credited_gpu_ms == sum(credited.get(k, 0) for k in mine)
        if job["max_cost"] is not None:
            assert view.cost_usd_micros <= job["max_cost"]
    periods = {k[1] for k in charged}
    if scenario["budget"] is not None:
        for period in periods:
            assert sum(v for k, v in net.items() if k[1] == period) <= scenario["budget"]
    if periods:
        current = platform.billing_json("u1")["current_period"]
        keys = [k for k in charged if k[1] == current["period"]]
        assert current["total_cost_usd_micros"] == sum(net[k] for k in keys)
        assert current.get("credited_usd_micros", 0) == sum(gross[k] - net[k] for k in keys)
        assert platform.stored_billing("u1") == platform.replayed_billing("u1")
