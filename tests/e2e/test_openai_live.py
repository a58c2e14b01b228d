"""Issue 15's test, for real: the official ``openai`` client (pinned in requirements-dev.txt) against a
running ``tune serve``, its embedded dispatcher training tiny-llama in real runner and trainer processes.

SFT with a validation file: upload both files, create the job, follow its events until a checkpoint is
saved, list checkpoints (each with its ``valid_loss``), pause (the job ends ``paused``: no runner or
trainer of it is left), resume (a new attempt from the pause's checkpoint), wait for ``succeeded``,
retrieve ``fine_tuned_model`` and chat with it through ``client.chat.completions``.
DPO: a preference file, ``method: dpo``, ``succeeded``, a model that answers.

The first attempt of the SFT job is held at its first checkpoint (``tests.e2e.held_trainer``) so the
pause lands mid-run however fast the CPU trains, without a step delay: the server is ``tune serve``
with its runner command swapped for the held one while ``<home>/hold`` exists (``held_serve_argv``).
Everything else is the product's: the API, the dispatcher, the job runner, the trainer, the ledger.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from runners.main_job import stop_server
from tests.e2e.held_trainer import held_serve_argv
from tests.emulators import free_port

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "correct-horse-battery"

# Few steps, a checkpoint (and an evaluation) every 2: the pause lands at step 2, the resume runs 3-4.
SFT_CONFIG = {
    "method": "lora",
    "max_steps": 4,
    "checkpoint_every_steps": 2,
    "lr_scheduler": "constant",
    "heartbeat_interval_seconds": 0.5,
    "gpu_type": "cpu",
}
DPO_CONFIG = {**SFT_CONFIG, "max_steps": 2, "checkpoint_every_steps": 100}


class Live:
    def __init__(self, home: Path, url: str, env: dict[str, str]) -> None:
        self.home, self.url, self.env = home, url, env
        self.hold = home / "hold"
        self.key = ""

    def cli(self, prog: str, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / prog), *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{prog} {' '.join(args)}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def client(self) -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=120)

    def state(self, job_id: str) -> str:
        reply = httpx.get(
            f"{self.url}/fine-tune/{job_id}/status", headers={"Authorization": f"Bearer {self.key}"}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["status"])

    def log(self) -> str:
        return (self.home / "serve.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TUNE_HOME": str(home),
        "TUNE_API_URL": url,
        "TUNE_CONFIG_DIR": str(home / "cli"),
        "HF_HUB_OFFLINE": "1",
        "TUNE_PREPARE_BASE_MODELS": "tiny-llama",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("TUNE_BUCKET", None)
    server_log = (home / "serve.log").open("w")
    server = subprocess.Popen(
        held_serve_argv(home / "hold", "serve", "--port", url.rsplit(":", 1)[1]),
        cwd=ROOT,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        plat = Live(home, url, env)
        _wait(lambda: _healthy(url, server, plat), 60, "tune serve to come up")
        plat.cli("tune", "admin", "user", "create", "--email", "ada@example.com", "--password", PASSWORD)
        plat.cli("tune", "login", "--email", "ada@example.com", "--password", PASSWORD)
        plat.key = plat.cli("tune", "key", "create", "--name", "openai-e2e").strip()
        yield plat
    finally:
        stop_server(server)
        server_log.close()


def _healthy(url: str, server: subprocess.Popen, plat: Live) -> bool:
    assert server.poll() is None, plat.log()
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """``probe()``'s first truthy answer, polled for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(interval)


def _processes_of(job_id: str) -> list[str]:
    """The command lines of the processes running for ``job_id`` (its runner and trainer name it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if job_id in argv and ("runners." in argv or "held_trainer" in argv):
            found.append(argv)
    return found


def _chat_lines(pairs: list[tuple[str, str]]) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _upload(client: Any, name: str, data: bytes) -> Any:
    file = client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")
    assert file.status == "processed", file
    return file


def _with_model(live: Live, job_id: str) -> Any:
    """The succeeded job once its ``fine_tuned_model`` shows: the model's id reaches the job's view with
    the model's own commit, a moment after ``succeeded``."""
    client = live.client()
    return _wait(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).fine_tuned_model and j, 30,
                 f"the fine_tuned_model of {job_id}")


def _ended(live: Live, job_id: str, timeout: float = 300) -> Any:
    client = live.client()
    job = _wait(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job_id)).status in {"succeeded", "failed", "cancelled"}
            and j
        ),
        timeout,
        f"job {job_id} to end\n{live.log()}",
    )
    return job


def test_sft_with_validation_follow_pause_resume_and_chat(live: Live) -> None:
    client = live.client()
    train = _upload(client, "train.jsonl", _chat_lines([(f"question {i}", f"answer {i}") for i in range(10)]))
    valid = _upload(
        client, "valid.jsonl", _chat_lines([(f"question {i}?", f"answer {i}.") for i in range(10)])
    )
    live.hold.touch()  # the first attempt holds at its first checkpoint, until paused
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        validation_file=valid.id,
        hyperparameters={"n_epochs": "auto", "batch_size": 2},
        seed=7,
        suffix="e2e",
        extra_body={"config": SFT_CONFIG},
    )
    assert job.validation_file == valid.id and job.fine_tuned_model is None
    assert job.status in {"validating_files", "queued", "running"}

    # Follow the events (newest first, paged with `after`) until the first checkpoint is saved and the
    # attempt's metrics (mirrored to the bucket on the runner's interval, so a little after) are read.
    seen: dict[str, Any] = {}

    def checkpoint_and_metrics() -> bool:
        page = client.fine_tuning.jobs.list_events(job.id, limit=100)
        seen.update({e.id: e for e in page.data})
        events = seen.values()
        return any(e.message.startswith("checkpoint at step") for e in events) and any(
            e.type == "metrics" and e.data and e.data.get("train_loss") is not None for e in events
        )

    try:
        _wait(checkpoint_and_metrics, 240, f"the first checkpoint and its metrics\n{live.log()}")
        assert any(e.message.startswith("Created fine-tuning job") for e in seen.values())
        assert _processes_of(job.id), "the attempt runs as processes naming its job"
    finally:
        live.hold.unlink()  # later attempts (the resume's) and jobs run as is, whatever happened here

    # The checkpoint is listed with its validation loss (its attempt's metrics mirrored to the bucket).
    points = _wait(
        lambda: [p for p in client.fine_tuning.jobs.checkpoints.list(job.id).data if p.metrics.valid_loss],
        60,
        "a checkpoint with its valid_loss",
    )
    assert points[0].step_number == 2 and points[0].fine_tuning_job_id == job.id
    assert points[0].metrics.valid_loss > 0 and points[0].metrics.train_loss is not None

    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    _wait(lambda: live.state(job.id) == "paused", 120, f"the job to be paused\n{live.log()}")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    gone = _wait(lambda: not _processes_of(job.id), 30, "the paused attempt's processes to exit")
    assert gone

    assert client.fine_tuning.jobs.resume(job.id).status in {"queued", "running"}
    done = _ended(live, job.id)
    assert done.status == "succeeded", (done, live.log())
    done = _with_model(live, job.id)
    assert done.fine_tuned_model and done.trained_tokens and done.finished_at
    assert done.user_provided_suffix == "e2e" and done.seed == 7
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    valid_losses = [e.data["step"] for e in events if e.type == "metrics" and "valid_loss" in (e.data or {})]
    assert 2 in valid_losses and 4 in valid_losses, valid_losses  # before the pause and at the end
    assert events[0].message == "The job has successfully completed"
    steps = {p.step_number for p in client.fine_tuning.jobs.checkpoints.list(job.id).data}
    assert max(steps) == 4, steps  # the pause's checkpoint, then the resumed attempt's (older ones pruned)

    assert done.fine_tuned_model in {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "question 1"}],
        max_tokens=4,
        temperature=0,
    )
    assert reply.model == done.fine_tuned_model and reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens >= 1


def test_dpo_job_on_a_preference_file(live: Live) -> None:
    client = live.client()
    pairs = [
        {
            "input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good answer {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad answer {i}"}],
        }
        for i in range(10)
    ]
    file = _upload(client, "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs).encode())
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 3}}},
        extra_body={"config": DPO_CONFIG},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    done = _ended(live, job.id)
    assert done.status == "succeeded", (done, live.log())
    done = _with_model(live, job.id)
    assert done.method.type == "dpo" and done.fine_tuned_model
    metrics = [
        e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"
    ]
    assert metrics and all(m.get("train_loss") is not None for m in metrics), metrics
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "question 1"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
