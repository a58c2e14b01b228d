"""The roles as separate processes on one local folder bucket (issue 13, parts 1 and 2).

Two API processes (``tune run api``, the second with two granian workers), then a suspension made
with ``tune admin user suspend`` in a third process: both API processes refuse the user's token
within 2 s (their change feeds poll the platform's head; the view each cached is dropped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulators import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TUNE = [sys.executable, "-c", "from cli.tune import main; main()"]
PASSWORD = "pw-long-enough-1"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not up in 60 s: {log.read_text()}"
        time.sleep(0.2)


@pytest.fixture
def apis(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    home = tmp_path / "home"
    env = {**os.environ, "TUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNE_CHANGE_FEED": "poll:0.25"}
    env.pop("TUNE_BUCKET", None)
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i, workers in enumerate((1, 2)):
            port = free_port()
            log = tmp_path / f"api{i}.log"
            with log.open("wb") as sink:
                procs.append(
                    subprocess.Popen(
                        [*TUNE, "run", "api", "--port", str(port), "--workers", str(workers)],
                        cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
            _up(urls[-1], procs[-1], log)
        first = re.search(r"first user \(admin\): (\S+)", (tmp_path / "api0.log").read_text())
        env["TUNE_FIRST_EMAIL"] = first[1] if first else ""
        yield urls, env
    finally:
        for proc in procs:
            os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def test_a_suspension_by_the_admin_cli_takes_effect_in_two_api_processes_within_2_s(
    apis: tuple[list[str], dict[str, str]],
) -> None:
    urls, env = apis
    home = Path(env["TUNE_HOME"])
    password = (home / "first_admin_password").read_text().strip()
    made = httpx.post(
        f"{urls[0]}/auth/login", json={"email": env["TUNE_FIRST_EMAIL"], "password": password}, timeout=10
    ).json()
    created = subprocess.run(
        [*TUNE, "admin", "user", "create", "--email", "sue@example.com", "--password", PASSWORD, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert made["token"]
    tokens = {}
    for url in urls:
        reply = httpx.post(
            f"{url}/auth/login", json={"email": "sue@example.com", "password": PASSWORD}, timeout=10
        )
        assert reply.status_code == 200 and reply.json()["token"], reply.text
        tokens[url] = reply.json()["token"]
    user_id = reply.json()["user_id"]
    for url in urls:
        for _ in range(4):  # every worker of the second process has it cached as allowed
            reply = httpx.get(f"{url}/datasets/{user_id}/list", headers=_bearer(tokens[url]))
            assert reply.status_code == 200, reply.text
    suspended = subprocess.run(
        [*TUNE, "admin", "user", "suspend", "--user-id", user_id, "--reason", "abuse"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert suspended.returncode == 0, suspended.stderr
    done = time.monotonic()
    lags = []
    for url in urls:
        while True:
            statuses = {
                httpx.get(f"{url}/datasets/{user_id}/list", headers=_bearer(tokens[url])).status_code
                for _ in range(4)  # several requests: each worker of the process answers some
            }
            if statuses <= {401, 403}:
                break
            assert time.monotonic() - done < 2.0, f"{url} still lets the suspended user in: {statuses}"
            time.sleep(0.05)
        lags.append(time.monotonic() - done)
    assert max(lags) < 2.0
