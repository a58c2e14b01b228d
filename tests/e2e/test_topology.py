"""The multi-process topology (issue 13), all real parts, each role its own OS process.

fake-gcs-server is the bucket and publishes its object notifications to Google's Pub/Sub emulator;
two API processes (``tune run api``, the second with two workers), a projector, a ledger and a
dispatcher (``tune run ...``) each follow them on a subscription of their own
(``TUNE_CHANGE_FEED=pubsub://.../topo-*``). Runners run on the local backend (children of the
dispatcher in sessions of their own; a local Ray head is what ``test_ray_backend`` covers: its start
and a Ray job's overhead would more than double this test's time on two cores) and publish their
heartbeats to Pub/Sub themselves. A tiny-llama job goes end to end through the CLIs. Its trainer is
held at its first checkpoint (``tests.e2e.held_trainer``, the dispatcher's ``--runner-module``) while
each role in turn is SIGKILLed and started again (tiny-llama would train through all its steps in the
time the roles take to start), then let go to train to its end. Then:

- the job succeeds exactly once, in one attempt: the restarted dispatcher adopted the runner that
  survived it (one run launched, one ``Started``, one model);
- metered GPU time equals the GPU time the runner measured (its log: "after X s of GPU time"),
  within one heartbeat interval, and the status view's cost is that time at the CPU price;
- every API process's status view shows the last commit (succeeded, all the metered time) within
  2 s of it;
- a suspension made with ``tune admin user suspend`` takes effect in both API processes within 2 s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.held_trainer import HOLD_UNTIL_GONE
from tests.topology import Topology, running_topology

pytestmark = [pytest.mark.slow, pytest.mark.gcs, pytest.mark.pubsub]

PASSWORD = "pw-long-enough-1"
INTERVAL_S = 1.0
CONFIG = f"""\
method: lora
lora: {{r: 8, alpha: 16, dropout: 0.0}}
batch_size: 2
learning_rate: 0.02
lr_scheduler: constant
max_steps: 40
checkpoint_every_steps: 20
heartbeat_interval_seconds: {INTERVAL_S}
gpu_type: cpu
"""
GPU_TIME = re.compile(r"after ([0-9.]+) s of GPU time")


@pytest.fixture
def topology(pubsub_emulator: str, tmp_path: Path) -> Iterator[Topology]:
    held = ("--max-concurrent", "1", "--runner-module", "tests.e2e.held_trainer")
    env = {HOLD_UNTIL_GONE: str(tmp_path / "hold")}
    with running_topology(tmp_path, env=env, dispatcher_args=held) as plane:
        yield plane


def _status(plane: Topology, api: str, job_id: str, token: str) -> dict:
    reply = httpx.get(
        f"{plane.url(api)}/fine-tune/{job_id}/status",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_a_job_survives_each_role_killed_in_turn_and_every_api_process_follows(
    topology: Topology, tmp_path: Path
) -> None:
    from domain.job import Job, JobState
    from domain.model import Model
    from storage import open_bucket
    from storage.eventstore import open_user
    from storage.eventstore.ledger import Ledger, configure_ledger

    plane = topology
    plane.cli("admin", "user", "create", "--email", "ada@example.com", "--password", PASSWORD)
    plane.cli("login", "--email", "ada@example.com", "--password", PASSWORD)
    token = httpx.post(
        f"{plane.url('api1')}/auth/login", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10
    ).json()
    user_id, token = token["user_id"], token["token"]
    data = tmp_path / "facts.jsonl"
    line = {
        "messages": [{"role": "user", "content": "The word?"}, {"role": "assistant", "content": "Marzipan."}]
    }
    data.write_text((json.dumps(line) + "\n") * 12)
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)
    plane.cli("upload", "--file", str(data), prog="dataset")
    datasets = json.loads(plane.cli("list", "--json", prog="dataset"))
    dataset_id = (datasets if isinstance(datasets, list) else datasets["datasets"])[0]["dataset_id"]
    hold = Path(plane.env[HOLD_UNTIL_GONE])
    hold.touch()  # the trainer holds at its first checkpoint until this is gone
    plane.cli("start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", str(config))
    jobs = json.loads(plane.cli("list", "--json"))
    job_id = (jobs if isinstance(jobs, list) else jobs["jobs"])[0]["job_id"]

    bucket = open_bucket(plane.env["TUNE_BUCKET"])
    configure_ledger(bucket, Ledger(bucket, tmp_path / "home"))
    app = open_user(bucket, user_id)

    def job():  # type: ignore[no-untyped-def]
        return app.get_job(job_id)

    # SIGKILL each role in turn while the job is mid-run (held at its first checkpoint), and start it again
    deadline = time.monotonic() + 300
    while job().last_checkpoint is None:
        assert job().state not in (JobState.SUCCEEDED, JobState.FAILED), plane.diagnostics()
        assert time.monotonic() < deadline, f"no progress\n{plane.diagnostics()}"
        time.sleep(0.5)
    for role in ("api0", "projector", "ledger", "dispatcher"):
        assert job().state == JobState.RUNNING, (role, job(), plane.diagnostics())
        plane.kill(role)
        time.sleep(INTERVAL_S)
        plane.start(role)
    assert "1 run(s) adopted" in plane.log("dispatcher").read_text(), plane.diagnostics()
    assert job().state == JobState.RUNNING and job().step <= 20, (job(), plane.diagnostics())
    hold.unlink()  # let it train to its end

    while job().state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED):
        assert time.monotonic() < deadline + 300, f"not done\n{plane.diagnostics()}"
        time.sleep(0.5)
    finished = job()
    assert finished.state == JobState.SUCCEEDED, plane.diagnostics()

    # once: one attempt (the survivor adopted, nothing launched again), one success, one model
    events = list(app.events.get(Job.create_id(job_id)))
    assert finished.attempt == 1 and sum(isinstance(e, Job.Started) for e in events) == 1, plane.diagnostics()
    assert sum(isinstance(e, Job.Succeeded) for e in events) == 1
    assert len(plane.runner_logs()) == 1, list(plane.runner_logs())
    model_events = list(app.events.get(Model.create_id(finished.model_id)))
    assert sum(isinstance(e, Model.Registered) for e in model_events) == 1

    # billed what ran: metered = the runner's measured GPU time, within one heartbeat interval
    [runner_log] = plane.runner_logs().values()
    measured_ms = float(GPU_TIME.search(runner_log).group(1)) * 1000  # type: ignore[union-attr]
    while True:
        events = list(app.events.get(Job.create_id(job_id)))
        metered_ms = sum(e.gpu_ms for e in events if isinstance(e, Job.UsageMetered))
        if abs(metered_ms - measured_ms) <= INTERVAL_S * 1000:
            break
        assert time.monotonic() < deadline + 400, (metered_ms, measured_ms, plane.diagnostics())
        time.sleep(0.2)
    last_seen = time.monotonic()  # the last commit was made at most one look (0.2 s) before

    # every API process's view reaches that last commit within 2 s, with the metered time and its cost
    for api in ("api0", "api1"):
        while True:
            status = [_status(plane, api, job_id, token) for _ in range(3)]  # api1's workers alike
            if all(s["status"] == "succeeded" and s["gpu_metrics"]["gpu_ms"] == metered_ms for s in status):
                break
            assert time.monotonic() - last_seen < 2.0, (api, status[-1], metered_ms)
            time.sleep(0.05)
    cost = status[0]["cost_usd_micros"]
    print(f"\nmeasured={measured_ms:.0f} ms metered={metered_ms} ms cost={cost} micro-USD")

    # a suspension with the admin CLI takes effect in both API processes within 2 s
    plane.cli("admin", "user", "suspend", "--user-id", user_id, "--reason", "abuse")
    suspended = time.monotonic()
    for api in ("api0", "api1"):
        while True:
            codes = {
                httpx.get(
                    f"{plane.url(api)}/fine-tune/{job_id}/status",
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code
                for _ in range(4)
            }
            if codes <= {401, 403}:
                break
            assert time.monotonic() - suspended < 2.0, (api, codes)
            time.sleep(0.05)
