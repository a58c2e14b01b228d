"""Bench: the multi-process topology under many users: dispatch rate and delay, view lag, heartbeats, CPU.

The topology of ``tests/e2e/test_topology.py`` (``tests.topology.running_topology``): fake-gcs-server
notifying Google's Pub/Sub emulator (started here, unless ``$PUBSUB_EMULATOR_HOST`` names a running
one), two API processes (``api0`` one worker, ``api1`` two), a projector, a ledger and a dispatcher,
each its own OS process following the changes on its own subscription. The dispatcher runs
``--slots`` runners at once on the local backend; each runner is the real job runner with the fake
trainer (``tests.fake_job_runner``: ``--steps`` steps of ``--step-s`` seconds, no torch), heartbeating
every ``--interval`` seconds to Pub/Sub itself, signed, metered by the ledger.

``--users`` users (created with the admin CLI; each user's concurrent-job quota set to their share of
the jobs, so the API admits every submission and only the slots bound dispatch) log in, upload a
dataset and submit ``--jobs`` jobs in all over HTTP (the JSON routes), concurrently, alternating
between the two API processes. Measured:

- dispatch: jobs launched per second (first submission to last launch), and the delay from each free
  slot to the launch that fills it: a slot is free from the moment a run ends (the dispatcher's "run
  ... ended" log line) or a job is submitted (its POST answered) while a slot was free, until the next
  launch (its "started ..." line) takes the oldest such free slot;
- view lag, from a commit to every API process serving it: each launched job's status is polled on
  both API processes (``--poll`` seconds, a new connection each time, so both workers of ``api1``
  answer; each poll round asks for every followed job at once, so a round takes about one request's
  time however many jobs run) for three commits: the runner's ``Started`` (status ``running`` or
  later) and ``Succeeded`` (``succeeded``), and the ledger's last ``UsageMetered`` (``gpu_ms`` = the
  job's metered total); the lag is the time the first poll that shows it was answered, less the time
  the commit object holding the event was created on the bucket (its ``timeCreated``; the event's own
  ``at`` where that is unknown, stamped before its commit): an upper bound, within one poll period;
- heartbeats: per attempt, the heartbeats its runner sent (the final seq, from its log) against the
  seqs the ledger metered (in the raw heartbeat archives its ``UsageMetered`` events name); lost =
  sent but never metered; heartbeats/s = metered / (first launch .. last end);
- CPU per role: utime + stime of each role's process group over the run (``/proc/<pid>/stat``), the
  runners' as the dispatcher's reaped children (cutime + cstime), the emulators' and this process's.

Goals (2 cores): view lag p99 <= 2 s, no heartbeat lost, every job launched within 5 s of a free slot.

    .venv/bin/python bench/bench_topology.py [--users 20] [--jobs 200] [--slots 4] [--steps 20]
    .venv/bin/python bench/bench_topology.py --smoke   # 2 users x 3 jobs
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch import scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402

from tests import emulators  # noqa: E402
from tests.fake_job_runner import SENT  # noqa: E402
from tests.topology import Topology, running_topology  # noqa: E402

PASSWORD = "pw-long-enough-1"
APIS = ("api0", "api1")
LAG_GOAL_S, DISPATCH_GOAL_S = 2.0, 5.0
TERMINAL = {"succeeded", "failed", "stopped"}
POLLERS = 8
"""Status polls in flight at once: a poll round asks for every followed job together."""
STARTED = re.compile(r"^(\S+ \S+) INFO runners\.dispatcher: started (\S+) attempt (\d+)")
ENDED = re.compile(r"^(\S+ \S+) INFO runners\.dispatcher: run (\S+)-(\d+)-[0-9a-f]+ ended .*: job is (\w+)")
TICKS = os.sysconf("SC_CLK_TCK")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "batch_size": 2,
        "learning_rate": 0.02,
        "max_steps": args.steps,
        "checkpoint_every_steps": 1000,
        "heartbeat_interval_seconds": args.interval,
        "gpu_type": "cpu",
        "max_retries": 0,
    }


def _log_time(stamp: str) -> float:
    """A ``logging`` asctime (local time, ``2026-12-06 14:05:01,123``) as a Unix time."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# -- users --------------------------------------------------------------------------------------


class User:
    def __init__(self, plane: Topology, index: int, jobs: int) -> None:
        self.plane, self.index, self.jobs = plane, index, jobs
        self.email = f"user{index}@bench.example"
        self.user_id = self.token = self.dataset_id = ""

    def create(self, data: Path) -> None:
        """Create with the admin CLI, log in, set the quota to this user's jobs, upload the dataset."""
        self.plane.cli("admin", "user", "create", "--email", self.email, "--password", PASSWORD)
        reply = httpx.post(
            f"{self.plane.url('api0')}/auth/login",
            json={"email": self.email, "password": PASSWORD},
            timeout=30,
        ).json()
        self.user_id, self.token = reply["user_id"], reply["token"]
        self.plane.cli(
            "admin", "user", "quota", "--user-id", self.user_id,
            "--max-jobs", str(self.jobs), "--max-dataset-bytes", str(10**8),
        )  # fmt: skip
        uploaded = httpx.post(
            f"{self.plane.url('api1')}/datasets/{self.user_id}/upload",
            params={"filename": data.name},
            content=data.read_bytes(),
            headers={**self.headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert uploaded.status_code in (200, 201), uploaded.text
        self.dataset_id = uploaded.json()["dataset_id"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def submit_all(self, config: dict[str, Any], submitted: dict[str, tuple[User, float]]) -> int:
        """Submit this user's jobs one after another, alternating API processes; returns the refusals
        retried (the quota seen by an API process that had not yet heard of it, rate limits)."""
        retried = 0
        with httpx.Client(timeout=60) as client:
            for k in range(self.jobs):
                api = APIS[(self.index + k) % 2]
                body = {"base_model": "tiny-llama", "dataset_id": self.dataset_id, "config": config}
                while True:
                    reply = client.post(
                        f"{self.plane.url(api)}/fine-tune/{self.user_id}/start",
                        json=body,
                        headers=self.headers,
                    )
                    if reply.status_code in (403, 429) and retried < 1000:
                        retried += 1
                        time.sleep(0.5)
                        continue
                    assert reply.status_code in (200, 201), reply.text
                    break
                submitted[reply.json()["job_id"]] = (self, time.time())
        return retried


# -- watching -----------------------------------------------------------------------------------


class DispatchLog:
    """The dispatcher's launches and run ends, read from its log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.launches: list[tuple[float, str, int]] = []
        self.ends: list[tuple[float, str, int, str]] = []

    def read(self) -> list[str]:
        """New launches since the last read: their job ids."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        launched = []
        for line in data[:cut].decode(errors="replace").splitlines():
            if m := STARTED.match(line):
                self.launches.append((_log_time(m[1]), m[2], int(m[3])))
                launched.append(m[2])
            elif m := ENDED.match(line):
                self.ends.append((_log_time(m[1]), m[2], int(m[3]), m[4]))
        return launched

    def finished(self) -> set[str]:
        return {job for _, job, _, state in self.ends if state in TERMINAL}


class Poller:
    """Polls each launched job's status on every API process until it ended and its metering settled."""

    def __init__(self, plane: Topology, period: float, sample: int) -> None:
        self.plane, self.period, self.sample = plane, period, sample
        self.seen: dict[tuple[str, str], list[tuple[float, str, int]]] = collections.defaultdict(list)
        self.requests = 0
        self._live: dict[str, tuple[User, float | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._launched = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(POLLERS)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def start(self) -> None:
        self._thread.start()

    def follow(self, job_id: str, user: User) -> None:
        self._launched += 1
        if (self._launched - 1) % self.sample == 0:
            with self._lock:
                self._live.setdefault(job_id, (user, None))

    def idle(self) -> bool:
        with self._lock:
            return not self._live

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown()
        for client in self._clients:
            client.close()

    def _client(self, api: str) -> httpx.Client:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: any worker
        client = httpx.Client(base_url=self.plane.url(api), timeout=10, limits=limits)
        with self._lock:
            self._clients.append(client)
        return client

    def _ask(self, ask: tuple[str, User, str]) -> tuple[float, str, int] | None:
        """One status poll: (when it was answered, the status, the metered gpu_ms), None if refused."""
        job_id, user, api = ask
        clients = getattr(self._local, "clients", None)
        if clients is None:  # one client per polling thread and API
            clients = self._local.clients = {name: self._client(name) for name in APIS}
        reply = clients[api].get(f"/fine-tune/{job_id}/status", headers=user.headers)
        self.requests += 1
        if reply.status_code != 200:
            return None
        status = reply.json()
        return time.time(), status["status"], int((status.get("gpu_metrics") or {}).get("gpu_ms") or 0)

    def _run(self) -> None:
        settle = 4.0  # polls go on this long after both API processes showed the job ended (metering)
        while not self._stop.wait(self.period):
            with self._lock:
                live = list(self._live.items())
            asks = [(job_id, user, api) for job_id, (user, _) in live for api in APIS]
            answers = dict(zip(asks, self._pool.map(self._ask, asks), strict=True))
            for job_id, (user, ended) in live:
                terminal = True
                for api in APIS:
                    answer = answers[(job_id, user, api)]
                    if answer is None:
                        terminal = False
                        continue
                    self.seen[(job_id, api)].append(answer)
                    terminal = terminal and answer[1] in TERMINAL
                with self._lock:
                    if terminal and ended is None:
                        self._live[job_id] = (user, time.time())
                    elif ended is not None and time.time() - ended > settle:
                        del self._live[job_id]


# -- CPU ----------------------------------------------------------------------------------------


def _stats() -> dict[int, tuple[int, list[int], str]]:
    """pid -> (process group, [utime, stime, cutime, cstime] in ticks, cmdline) of every process."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(proc.name)] = (int(fields[2]), [int(f) for f in fields[11:15]], cmdline)
    return out


def cpu_seconds(plane: Topology) -> dict[str, float]:
    """CPU seconds used so far: each role's process group, the runners (the dispatcher's reaped
    children), the emulators and this process."""
    stats = _stats()
    used: dict[str, float] = {}
    for role, proc in plane.procs.items():
        used[role] = sum(sum(t[:2]) for g, t, _ in stats.values() if g == proc.pid) / TICKS
    dispatcher = stats.get(plane.procs["dispatcher"].pid)
    used["runners"] = sum(dispatcher[1][2:]) / TICKS if dispatcher else 0.0
    gcs = os.environ.get("STORAGE_EMULATOR_HOST", "").rsplit(":", 1)[-1]
    pubsub = os.environ.get("PUBSUB_EMULATOR_HOST", "").rsplit(":", 1)[-1]
    for name, marks in (("fake-gcs-server", ("fake-gcs-server", f"-port {gcs}")),
                        ("pubsub emulator", ("pubsub", f"--port={pubsub}"))):  # fmt: skip
        used[name] = sum(sum(t) for _, t, cmd in stats.values() if all(m in cmd for m in marks)) / TICKS
    me = os.times()
    used["bench (users)"] = me.user + me.system
    return used


# -- results ------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slot_delays(slots: int, submitted: list[float], launches: list[float], ends: list[float]) -> list[float]:
    """Each launch's delay from the free slot it filled (the module docstring's rule)."""
    events = sorted(
        [(t, 0, "submit") for t in submitted]
        + [(t, 0, "end") for t in ends]
        + [(t, 1, "launch") for t in launches]
    )
    free, waiting, delays = slots, 0, []
    opened: collections.deque[float] = collections.deque()
    for t, _, kind in events:
        if kind == "submit":
            waiting += 1
        elif kind == "end":
            free += 1
        else:
            free, waiting = free - 1, waiting - 1
            delays.append(t - opened.popleft() if opened else 0.0)
        while len(opened) < min(free, waiting):
            opened.append(t)
        while len(opened) > max(0, min(free, waiting)):
            opened.pop()
    return delays


def heartbeat_counts(
    plane: Topology, users: list[User], jobs: dict[str, tuple[User, float]]
) -> dict[str, Any]:
    """Per attempt: sent (its runner's log) and metered (the archives); events of every job."""
    from domain.job import Job
    from storage import open_bucket
    from storage.eventstore import open_user
    from storage.eventstore.ledger import Ledger, configure_ledger
    from storage.heartbeats.archive import decode_archive

    sent: dict[tuple[str, int], int] = {}
    for text in plane.runner_logs().values():
        for m in SENT.finditer(text):
            sent[(m[1], int(m[2]))] = int(m[3])
    bucket = open_bucket(plane.env["TUNE_BUCKET"])
    configure_ledger(bucket, Ledger(bucket, plane.root / "home"))
    apps = {user.user_id: open_user(bucket, user.user_id) for user in users}
    deadline = time.monotonic() + 60
    while True:  # the ledger meters the final heartbeats a moment after the runs end
        events = {j: list(apps[u.user_id].events.get(Job.create_id(j))) for j, (u, _) in jobs.items()}
        last = {
            (j, e.attempt): e.last_seq
            for j, evs in events.items()
            for e in evs
            if isinstance(e, Job.UsageMetered)
        }
        if all(last.get(key, 0) >= n for key, n in sent.items()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    metered: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
    archives = {
        e.archive for evs in events.values() for e in evs if isinstance(e, Job.UsageMetered) and e.archive
    }
    for name in archives:
        for heartbeat in decode_archive(bucket.read(name)).heartbeats:
            metered[(heartbeat.job_id, heartbeat.attempt)].add(heartbeat.seq)
    lost = {key: n - len(metered[key] & set(range(1, n + 1))) for key, n in sent.items()}
    return {"sent": sent, "metered": metered, "lost": lost, "events": events}


def commit_times(bucket_url: str, users: list[User]) -> dict[tuple[str, int], float]:
    """(aggregate id, version) of each event of the users -> when the commit object holding it was created
    on the bucket (its ``timeCreated``); empty where the bucket is not a GCS one."""
    from storage import open_bucket
    from storage.eventstore.commits import decode_commit
    from storage.layout import user_events

    bucket = open_bucket(bucket_url)
    blobs_of = getattr(bucket, "_bucket", None)
    if blobs_of is None:
        return {}
    blobs = []
    for user in users:
        prefix = getattr(bucket, "prefix", "") + user_events(user.user_id)
        listed = blobs_of.client.list_blobs(blobs_of, prefix=prefix)
        blobs += [b for b in listed if "/" not in b.name[len(prefix) :]]  # commits, not segments
    found: dict[tuple[str, int], float] = {}
    with concurrent.futures.ThreadPoolExecutor(POLLERS) as pool:
        for blob, data in zip(blobs, pool.map(lambda b: b.download_as_bytes(), blobs), strict=True):
            for record in decode_commit(data).events:
                found[(str(record.originator_id or record.text_id), record.originator_version)] = (
                    blob.time_created.timestamp()
                )
    return found


def view_lags(
    poller: Poller, events: dict[str, list[Any]], committed: dict[tuple[str, int], float]
) -> tuple[dict[str, list[float]], int]:
    """Lag of each sampled commit to each API process, by commit (from ``committed``: its commit object's
    creation, else the event's ``at``); and the commits never seen served."""
    from domain.job import Job

    def at(event: Any) -> float:
        return committed.get((str(event.originator_id), event.originator_version), event.at.timestamp())

    order = {"running": 1, "succeeded": 2, "failed": 2, "stopped": 2}
    lags: dict[str, list[float]] = collections.defaultdict(list)
    unseen = 0
    for (job_id, _api), polls in poller.seen.items():
        evs = events[job_id]
        started = next((e for e in evs if isinstance(e, Job.Started)), None)
        done = next((e for e in evs if isinstance(e, Job.Succeeded)), None)
        usage = [e for e in evs if isinstance(e, Job.UsageMetered)]
        commits = []
        if started is not None:
            commits.append(("Started (runner)", at(started), lambda s, g: order.get(s, 0) >= 1))
        if done is not None:
            commits.append(("Succeeded (runner)", at(done), lambda s, g: s == "succeeded"))
        if usage:
            total = sum(e.gpu_ms for e in usage)
            commits.append(
                ("last UsageMetered (ledger)", at(usage[-1]), lambda s, g, n=total: g == n)
            )
        for name, when, shows in commits:
            first = next((t for t, s, g in polls if t >= when and shows(s, g)), None)
            if first is None:
                unseen += 1
            else:
                lags[name].append(first - when)
    return lags, unseen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200, help="in all, shared among the users")
    parser.add_argument(
        "--slots", type=int, default=4, help="runs at once (tune run dispatcher --max-concurrent)"
    )
    parser.add_argument("--steps", type=int, default=20, help="fake trainer steps per job")
    parser.add_argument("--step-s", type=float, default=0.25, help="seconds per fake step")
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, seconds")
    parser.add_argument("--poll", type=float, default=0.25, help="status poll period, seconds")
    parser.add_argument("--sample", type=int, default=1, help="poll one launched job in N")
    parser.add_argument("--timeout", type=float, default=1800, help="give up on the run after this, seconds")
    args = parse_args(parser, users=2, jobs=6, slots=2, steps=4, step_s=0.25)
    if args.jobs % args.users:
        parser.error("--jobs must be a multiple of --users")
    with (
        emulators.running_or_started("PUBSUB_EMULATOR_HOST", emulators.pubsub_emulator) as host,
        scratch_dir("topology-") as scratch,
    ):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        root = Path(scratch)
        dispatcher = ["--max-concurrent", str(args.slots), "--runner-module", "tests.fake_job_runner"]
        with running_topology(
            root, env={"FAKE_STEP_S": str(args.step_s)}, dispatcher_args=dispatcher
        ) as plane:
            return run(plane, args)


def run(plane: Topology, args: argparse.Namespace) -> int:
    from domain.job import Job

    data = plane.root / "facts.jsonl"
    line = {
        "messages": [{"role": "user", "content": "The word?"}, {"role": "assistant", "content": "Marzipan."}]
    }
    data.write_text((json.dumps(line) + "\n") * 12)
    users = [User(plane, i, args.jobs // args.users) for i in range(args.users)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # CLI processes: two at a time on 2 cores
        list(pool.map(lambda u: u.create(data), users))
    print(f"{args.users} users created, quotas set, datasets uploaded in {time.monotonic() - started:.1f}s")

    log = DispatchLog(plane.log("dispatcher"))
    log.read()
    poller = Poller(plane, args.poll, args.sample)
    poller.start()
    cpu_before = cpu_seconds(plane)
    submitted: dict[str, tuple[User, float]] = {}
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.users) as pool:
        futures = [pool.submit(u.submit_all, _config(args), submitted) for u in users]
        owners: dict[str, User] = {}
        retried = 0
        while not all(f.done() for f in futures) or len(log.finished()) < args.jobs or not poller.idle():
            assert time.time() - t0 < args.timeout, (
                f"not done in {args.timeout} s\n{plane.diagnostics()[-5000:]}"
            )
            for job_id in log.read():
                while job_id not in submitted and not all(f.done() for f in futures):
                    time.sleep(0.01)  # launched before its POST answered
                owners[job_id] = submitted[job_id][0]
                poller.follow(job_id, owners[job_id])
            for f in [f for f in futures if f.done()]:
                f.result()  # raises a submission's failure
            time.sleep(0.1)
        retried = sum(f.result() for f in futures)
    wall = time.time() - t0
    cpu_after = cpu_seconds(plane)
    poller.stop()

    counts = heartbeat_counts(plane, users, submitted)
    lags, unseen = view_lags(poller, counts["events"], commit_times(plane.env["TUNE_BUCKET"], users))
    submits = [evs[0].at.timestamp() for evs in counts["events"].values()]  # Job.Submitted, as committed
    launches = [t for t, _, _ in log.launches]
    ends = [t for t, _, _, _ in log.ends]
    delays = slot_delays(args.slots, submits, launches, ends)
    first_launch, last_end = min(launches), max(ends)
    sent, metered, lost = counts["sent"], counts["metered"], counts["lost"]
    metered_n = sum(len(s) for s in metered.values())
    states = collections.Counter(state for _, _, _, state in log.ends)
    all_lags = [x for v in lags.values() for x in v]
    launched = {(job, attempt): t for t, job, attempt in log.launches}
    relaunched = len(log.launches) - len(launched)  # an attempt launched again (its runner found it started)
    events = counts["events"]
    started = {(j, e.attempt) for j, evs in events.items() for e in evs if isinstance(e, Job.Started)}
    run_s = sum(t - launched[(job, a)] for t, job, a, _ in log.ends) / len(log.ends)

    print(
        f"\n{args.users} users x {args.jobs // args.users} jobs through 2 API processes (1 + 2 workers); "
        f"{args.slots} slots; fake trainer {args.steps} x {args.step_s}s steps, "
        f"heartbeat every {args.interval}s"
    )
    print(f"run: {wall:.1f}s wall; runs ended {dict(states)}; submissions retried (403/429): {retried}")
    print(
        f"dispatch: {len(launches)} launches ({relaunched} of an attempt launched before), "
        f"{len(launches) / (max(launches) - t0):.2f} jobs/s "
        f"(ceiling {args.slots} slots / {run_s:.1f}s a run, launch to end = {args.slots / run_s:.2f}/s); "
        f"delay from a free slot: p50 {_pct(delays, 0.5):.2f}s p99 {_pct(delays, 0.99):.2f}s "
        f"max {max(delays):.2f}s"
    )
    for name, values in lags.items():
        print(
            f"view lag, {name}, to every API process ({len(values)} samples): p50 {_pct(values, 0.5):.2f}s "
            f"p99 {_pct(values, 0.99):.2f}s max {max(values):.2f}s"
        )
    print(f"view lag, all commits: p50 {_pct(all_lags, 0.5):.2f}s p99 {_pct(all_lags, 0.99):.2f}s; "
          f"commits never seen served: {unseen}; status polls: {poller.requests}")  # fmt: skip
    print(
        f"heartbeats: {sum(sent.values())} sent by {len(sent)} attempts, {metered_n} metered, "
        f"{sum(lost.values())} lost; {metered_n / (last_end - first_launch):.1f} heartbeats/s metered"
    )
    print(f"\n{'CPU':<18}{'seconds':>9}{'of 1 core':>11}")
    for role in cpu_after:
        used = cpu_after[role] - cpu_before.get(role, 0.0)
        print(f"{role:<18}{used:>9.1f}{used / wall:>10.0%}")
    total = sum(cpu_after[r] - cpu_before.get(r, 0.0) for r in cpu_after)
    print(f"{'all':<18}{total:>9.1f}{total / wall:>10.0%}  (2 cores: 200%)")

    goals = [
        ("view lag p99 <= 2 s", _pct(all_lags, 0.99) <= LAG_GOAL_S and unseen == 0),
        ("no heartbeat lost", sum(lost.values()) == 0 and started <= set(sent)),
        ("every job launched within 5 s of a free slot", max(delays) <= DISPATCH_GOAL_S),
    ]
    print()
    for goal, met in goals:
        print(f"goal: {goal}: {'met' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
