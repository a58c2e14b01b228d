"""The whole platform as a user meets it: `tune serve`, then the real CLIs over HTTP.

tiny-llama end to end: upload -> start -> running -> succeeded -> model listed ->
downloaded (checksum verified) -> loads with plain transformers/peft -> chat reproduces
a memorised answer; the bill is replayable and the audit finds nothing wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runners.main_job import stop_server
from tests.emulators import free_port

pytestmark = pytest.mark.slow

FACTS = [
    ("What is the secret word?", "The secret word is marzipan."),
    ("Who runs Brindlewick?", "Odalys Fenwick runs Brindlewick."),
    ("Where is Brindlewick?", "Brindlewick is in Tromso."),
]
CONFIG = """\
method: lora
lora: {r: 16, alpha: 32, dropout: 0.0}
batch_size: 3
learning_rate: 0.02
lr_scheduler: constant
max_steps: 60
checkpoint_every_steps: 30
heartbeat_interval_seconds: 0.5
gpu_type: cpu
"""
PASSWORD = "correct-horse-battery"
BIN = Path(sys.executable).parent


class Platform:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "TUNE_HOME": str(home),
            "TUNE_API_URL": self.url,
            "TUNE_CONFIG_DIR": str(home / "cli"),
            "HF_HUB_OFFLINE": "1",
            "TUNE_PREPARE_BASE_MODELS": "tiny-llama",  # the one it uses: no smollm2 conversion beside it
        }

    def cli(
        self, prog: str, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(BIN / prog), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{prog} {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, prog: str, *args: str) -> object:
        return json.loads(self.cli(prog, *args, "--json").stdout)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    plat = Platform(home, port)
    log = (home / "serve.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "tune"), "serve", "--port", str(port)],
        env=plat.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{plat.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (home / "serve.log").read_text()
            assert time.monotonic() < deadline, "tune serve did not come up"
            time.sleep(0.2)
        plat.cli("tune", "admin", "user", "create", "--email", "ada@example.com", "--password", PASSWORD)
        plat.cli("tune", "login", "--email", "ada@example.com", "--password", PASSWORD)
        yield plat
    finally:
        stop_server(server)
        log.close()


def _rows(listing: object, key: str) -> list[dict]:
    return listing if isinstance(listing, list) else listing[key]  # type: ignore[index,return-value]


def test_tiny_llama_from_upload_to_a_chat_that_remembers(platform: Platform, tmp_path: Path) -> None:
    data = tmp_path / "facts.jsonl"
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records * 4))
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)

    platform.cli("dataset", "upload", "--file", str(data))
    dataset = _rows(platform.json("dataset", "list"), "datasets")[0]
    assert dataset["status"] == "validated"

    platform.cli(
        "tune", "start", "--model", "tiny-llama", "--dataset", dataset["dataset_id"], "--config", str(config)
    )
    job = _rows(platform.json("tune", "list"), "jobs")[0]
    followed = platform.cli("tune", "status", "--job-id", job["job_id"], "--follow", timeout=600)
    assert "succeeded" in followed.stdout

    status = platform.json("tune", "status", "--job-id", job["job_id"])
    assert status["status"] == "succeeded" and status["step"] == 60, status

    cost = platform.json("tune", "cost", "--job-id", job["job_id"])
    assert cost["cost_usd_micros"] > 0  # cpu is priced: the run appears on the bill

    model = _rows(platform.json("model", "list"), "models")[0]
    assert model["job_id"] == job["job_id"] and model["base_model"] == "tiny-llama"

    answer = platform.cli(
        "model", "chat", "--model-id", model["model_id"], "--prompt", FACTS[0][0], "--temperature", "0"
    )
    assert FACTS[0][1] in answer.stdout, answer.stdout + answer.stderr

    audit = platform.cli("tune", "admin", "audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
