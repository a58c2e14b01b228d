"""The README's main job, driven through the real CLIs (``./scripts/quickstart``).

Starts ``tune serve`` on the local bucket in ``$TUNE_HOME``, creates a user, uploads the
bundled sample dataset, fine-tunes ``smollm2-135m`` with LoRA while following progress,
shows the job's cost and the month's bill, then asks the fine-tuned model a question whose
answer only the dataset knows (and the base model answered wrongly before). Exits non-zero
if any step fails or the model did not learn.

Options: ``--model NAME`` (default smollm2-135m), ``--port N`` (default the port of
``TUNE_API_URL``, else 8600), ``--keep-serving`` (leave the server running at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from domain.money import format_usd
from runners.samples import SAMPLE_ANSWER, SAMPLE_CONFIG, SAMPLE_DATASET, SAMPLE_QUESTION
from storage.open import ensure_home

__all__ = ["main"]

EMAIL = "demo@example.com"
BIN = Path(sys.executable).parent


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _cli(prog: str, *args: str, capture: bool = False) -> str:
    done = subprocess.run([str(BIN / prog), *args], text=True, capture_output=capture)
    if done.returncode != 0:
        if capture:
            sys.stderr.write(done.stderr)
        raise SystemExit(f"main job: `{prog} {' '.join(args)}` failed (exit {done.returncode})")
    return done.stdout if capture else ""


def _first(listing: object, key: str) -> dict:
    rows = listing if isinstance(listing, list) else listing[key]  # type: ignore[index]
    return rows[0]


def estimate_beside_cost(started: dict, billed_usd_micros: int) -> str:
    """``estimated $X ($L to $H, <source>) - billed $Y (ratio)`` from the start reply and the job's cost."""
    expected = started.get("estimate_usd_micros") or 0
    low, high = started.get("estimate_low_usd_micros"), started.get("estimate_high_usd_micros")
    basis = started.get("estimate_basis") or started.get("estimate_source") or "estimate"
    shown = f"estimated {format_usd(expected)}"
    if low is not None and high is not None:
        shown += f" ({format_usd(low)} to {format_usd(high)}, {basis})"
    ratio = f" (estimate / actual {expected / billed_usd_micros:.2f}x)" if billed_usd_micros else ""
    return f"{shown} \u2014 billed {format_usd(billed_usd_micros)}{ratio}"


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM ``server``'s process group (it was started in a session of its own); SIGKILL after 30 s."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("main job: tune serve exited; see its log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise SystemExit("main job: tune serve did not become healthy")


def _password(home: Path) -> tuple[str, bool]:
    """The demo user's password, kept (0600) in the home so a second run logs in again."""
    path = home / "demo-password"
    if path.exists():
        return path.read_text().strip(), False
    password = secrets.token_hex(16)  # hex: never starts with "-", a safe CLI argument
    path.touch(mode=0o600)
    path.write_text(password)
    return password, True


def _port_of(api_url: str | None) -> int:
    """The port of ``TUNE_API_URL`` when it names one, else 8600: serve where the CLIs will look."""
    try:
        port = urllib.parse.urlsplit(api_url or "").port
    except ValueError:
        port = None
    return port or 8600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--port", type=int, default=_port_of(os.environ.get("TUNE_API_URL")))
    parser.add_argument("--keep-serving", action="store_true")
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) must still run the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = Path(os.environ.setdefault("TUNE_HOME", str(Path.cwd() / ".tune"))).resolve()
    ensure_home(home)
    url = f"http://127.0.0.1:{args.port}"
    os.environ["TUNE_API_URL"] = url
    os.environ.setdefault("TUNE_CONFIG_DIR", str(home / "cli"))
    began = time.monotonic()

    _say(f"starting the embedded server on {url} (bucket {home / 'bucket'}, log {home / 'serve.log'})")
    log = (home / "serve.log").open("a")
    server = subprocess.Popen(
        [str(BIN / "tune"), "serve", "--port", str(args.port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_healthy(url, server)
        password, new = _password(home)
        if new:
            _say(f"creating the user {EMAIL}")
            _cli("tune", "admin", "user", "create", "--email", EMAIL, "--password", password)
        _cli("tune", "login", "--email", EMAIL, "--password", password)

        _say(f"uploading the sample dataset {SAMPLE_DATASET.name}")
        _cli("dataset", "upload", "--file", str(SAMPLE_DATASET))
        dataset = _first(json.loads(_cli("dataset", "list", "--json", capture=True)), "datasets")

        _say(f"fine-tuning {args.model} with LoRA ({SAMPLE_CONFIG.name}); the estimate first")
        common = ("--model", args.model, "--dataset", dataset["dataset_id"], "--config", str(SAMPLE_CONFIG))
        _cli("tune", "start", *common, "--dry-run")
        started = json.loads(_cli("tune", "start", *common, "--json", capture=True))
        job_id = started["job_id"]
        _cli("tune", "status", "--job-id", job_id, "--follow")

        _say("what it cost (replayable from the ledger's events)")
        _cli("tune", "cost", "--job-id", job_id)
        _cli("tune", "billing")

        model = json.loads(_cli("tune", "status", "--job-id", job_id, "--json", capture=True))
        model_id = model["model_id"]
        _say(f"asking the fine-tuned model {model_id}: {SAMPLE_QUESTION!r}")
        reply = _cli(
            "model", "chat", "--model-id", model_id, "--prompt", SAMPLE_QUESTION,
            "--temperature", "0", "--max-new-tokens", "24", capture=True,
        )  # fmt: skip
        print(reply.strip())
        learned = SAMPLE_ANSWER in reply
        verdict = f"learned: the answer contains {SAMPLE_ANSWER!r}" if learned else "did NOT learn"
        billed = json.loads(_cli("tune", "status", "--job-id", job_id, "--json", capture=True))
        _say(estimate_beside_cost(started, billed.get("cost_usd_micros") or 0))
        _say(f"{verdict}; main job took {time.monotonic() - began:.0f} s")
        if args.keep_serving:
            print(f"server still running (pid {server.pid}); stop it with: kill {server.pid}")
            server = None  # type: ignore[assignment]
        return 0 if learned else 1
    finally:
        if server is not None:
            stop_server(server)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
