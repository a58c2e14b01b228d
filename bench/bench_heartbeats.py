"""Bench: heartbeats/s through each transport, published and consumed, as a ratio to direct.

Transport part: N heartbeats from J jobs go through DirectTransport (the
baseline, measured in the same run) and through Pub/Sub on Google's emulator
(started here, unless ``$PUBSUB_EMULATOR_HOST`` names a running one). Published:
``publish`` of all N plus ``flush``. End to end: from the first publish until the
subscriber's handler has seen every heartbeat (a subscriber is already running; the
handler only counts).

    .venv/bin/python bench/bench_heartbeats.py [--n 20000] [--jobs 8] [--max-batch 500]
    .venv/bin/python bench/bench_heartbeats.py --smoke   # seconds (and the emulator's start)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smoke import parse_args  # noqa: E402

from storage.heartbeats import DirectTransport, Heartbeat, HeartbeatTransport, open_heartbeat_transport  # noqa: E402
from tests import emulators  # noqa: E402

T0 = datetime(2026, 11, 29, tzinfo=UTC)


class Figures(NamedTuple):
    published_s: float
    end_to_end_s: float


def heartbeats(n: int, jobs: int) -> list[Heartbeat]:
    """``n`` heartbeats, jobs interleaved as concurrent runners would send them."""
    return [
        Heartbeat(user_id="u1", job_id=f"job_{i % jobs}", attempt=1, seq=i // jobs, gpu_type="h100",
                  gpu_count=8, gpu_ms_total=10_000 * (i // jobs), step=i // jobs, loss=1.0, tokens=65_536,
                  at=T0 + timedelta(seconds=10 * (i // jobs)))
        for i in range(n)
    ]


def run(transport: HeartbeatTransport, beats: list[Heartbeat], max_batch: int) -> Figures:
    """Publish ``beats`` with a subscriber running; time publish+flush and delivery of all of them."""
    seen: set[tuple[str, int, int]] = set()
    done = threading.Event()

    def handler(batch: list[Heartbeat]) -> None:
        seen.update(h.key for h in batch)
        if len(seen) == len(beats):
            done.set()

    with transport.subscriber(max_batch=max_batch) as sub, transport.publisher() as pub:
        sub.start(handler)
        start = time.perf_counter()
        for h in beats:
            pub.publish(h)
        pub.flush()
        published = time.perf_counter() - start
        if not done.wait(300):
            raise RuntimeError(f"only {len(seen)} of {len(beats)} heartbeats delivered")
        return Figures(published, time.perf_counter() - start)


def report(name: str, n: int, figures: Figures, baseline: Figures) -> None:
    pub_rate, e2e_rate = n / figures.published_s, n / figures.end_to_end_s
    slower = figures.end_to_end_s / baseline.end_to_end_s
    print(f"{name:<8} published {pub_rate:>10,.0f}/s  end to end {e2e_rate:>10,.0f}/s  "
          f"({figures.end_to_end_s:6.2f} s; {slower:7.1f}x direct's time)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=500)
    args = parse_args(parser, n=200, jobs=2, max_batch=50)
    beats = heartbeats(args.n, args.jobs)
    print(f"transports: {args.n:,} heartbeats from {args.jobs} jobs, handler batches of <= {args.max_batch}")

    direct = run(DirectTransport("bench"), beats, args.max_batch)
    report("direct", args.n, direct, direct)
    with emulators.running_or_started("PUBSUB_EMULATOR_HOST", emulators.pubsub_emulator) as host:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        name = f"bench-{uuid.uuid4().hex[:12]}"
        pubsub = run(open_heartbeat_transport(f"pubsub://bench/{name}/{name}-sub", create=True), beats,
                     args.max_batch)
    report("pubsub", args.n, pubsub, direct)
    print(f"ratio    Pub/Sub end to end takes {pubsub.end_to_end_s / direct.end_to_end_s:.1f}x direct's time "
          "(Pub/Sub = Google's emulator on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
