"""Bench: the dry run's estimate against the billed cost, on real jobs (goal: every ratio 0.75-1.25).

Starts ``tune serve`` on a fresh home in ``$BENCH_DIR``, creates a user, uploads the bundled sample
dataset, runs one calibrating job (the sample config), then three configurations that differ in
``max_steps``, batch size and sequence length. Each is estimated (``tune start --dry-run``) just
before it runs, so each is priced from the jobs before it (``measured from N jobs``); once it has
finished and its last heartbeat is metered, its billed cost is read. Prints estimate / actual for
each. Exits 1 if a ratio is outside the goal (not with ``--smoke``: tiny-llama, figures meaningless).

    .venv/bin/python bench/bench_estimate.py                # smollm2-135m on this machine's GPU type
    .venv/bin/python bench/bench_estimate.py --smoke        # tiny-llama, seconds a job
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from smoke import parse_args

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.samples import SAMPLE_CONFIG, SAMPLE_DATASET  # noqa: E402

BIN = Path(sys.executable).parent
GOAL = (0.75, 1.25)
EMAIL = "bench@example.com"
PASSWORD = "bench-password-0123"
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("calibrating (sample config, 2 epochs)", {"epochs": 2}),
    ("max_steps 6, batch 8, seq 256", {"max_steps": 6}),
    ("1 epoch, batch 4, seq 256", {"epochs": 1, "batch_size": 4}),
    ("max_steps 12, batch 8, seq 128", {"max_steps": 12, "max_seq_length": 128}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--gpu-type", default="cpu")
    parser.add_argument("--settle-s", type=float, default=20.0, help="how long to wait for the last metering")
    args = parse_args(parser, model="tiny-llama", settle_s=2.0)
    base = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="bench-estimate-"))
    home = base / "estimate-home"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "TUNE_HOME": str(home),
        "TUNE_API_URL": f"http://127.0.0.1:{port}",
        "TUNE_CONFIG_DIR": str(home / "cli"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNE_PREPARE_BASE_MODELS": args.model,  # only the model measured: no conversion beside its jobs
    }
    log = (home / "serve.log").open("a")
    server = subprocess.Popen(
        [str(BIN / "tune"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_healthy(env["TUNE_API_URL"], server)
        cli = _Cli(env)
        cli("tune", "admin", "user", "create", "--email", EMAIL, "--password", PASSWORD)
        cli("tune", "login", "--email", EMAIL, "--password", PASSWORD)
        cli("dataset", "upload", "--file", str(SAMPLE_DATASET))
        datasets = json.loads(cli("dataset", "list", "--json"))
        dataset_id = (datasets if isinstance(datasets, list) else datasets["datasets"])[0]["dataset_id"]
        sample = yaml.safe_load(SAMPLE_CONFIG.read_text())
        ratios = []
        for name, change in CONFIGS:
            config = home / f"config-{len(ratios)}.yml"
            config.write_text(yaml.safe_dump({**sample, "gpu_type": args.gpu_type, **change}))
            common = ("--model", args.model, "--dataset", dataset_id, "--config", str(config), "--json")
            estimate = json.loads(cli("tune", "start", *common, "--dry-run"))
            job_id = json.loads(cli("tune", "start", *common))["job_id"]
            cli("tune", "status", "--job-id", job_id, "--follow")
            status = _settled(cli, job_id, args.settle_s)
            if status["status"] != "succeeded":
                raise SystemExit(
                    f"bench_estimate: job {job_id} ended {status['status']}: {status.get('error')}"
                )
            actual = status["cost_usd_micros"]
            ratio = estimate["estimate_usd_micros"] / actual if actual else float("inf")
            ratios.append(ratio)
            print(
                f"{name:38s}: estimate {estimate['estimate_usd_micros']:>6d} µ$ "
                f"({estimate['estimate_low_usd_micros']}-{estimate['estimate_high_usd_micros']}, "
                f"{estimate['estimate_basis']}, {estimate['estimate_steps']} steps) / actual {actual:>6d} µ$"
                f" = {ratio:.2f}x",
                flush=True,
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    judged = ratios[1:]  # the calibrating job has nothing before it to be measured from
    met = all(GOAL[0] <= r <= GOAL[1] for r in judged)
    verdict = "met" if met else "MISSED"
    print(f"goal: every ratio after the calibrating job within {GOAL[0]}-{GOAL[1]} -> {verdict}")
    return 0 if met or args.smoke else 1


class _Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, prog: str, *args: str) -> str:
        done = subprocess.run([str(BIN / prog), *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(
                f"bench_estimate: `{prog} {' '.join(args)}` exited {done.returncode}:\n{done.stderr}"
            )
        return done.stdout


def _settled(cli: _Cli, job_id: str, settle_s: float) -> dict[str, Any]:
    """The job's status once its cost has stopped moving (its last heartbeat metered) for ``settle_s``."""
    status = json.loads(cli("tune", "status", "--job-id", job_id, "--json"))
    deadline = time.monotonic() + 6 * settle_s
    still_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - still_since < settle_s:
        time.sleep(1.0)
        again = json.loads(cli("tune", "status", "--job-id", job_id, "--json"))
        if again["cost_usd_micros"] != status["cost_usd_micros"]:
            still_since = time.monotonic()
        status = again
    return status  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("bench_estimate: tune serve exited; see its serve.log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise SystemExit("bench_estimate: tune serve did not become healthy")


if __name__ == "__main__":
    raise SystemExit(main())
