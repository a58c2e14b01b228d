"""The local subprocess backend: launch, heartbeat relay from stdout, status, graceful stop, close."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from runners.backends import LaunchBackend, LaunchFailed, LaunchRequest, LocalSubprocessBackend
from storage.heartbeats import Heartbeat
from tests.unit.runners.builders import wait_for

# A stand-in job runner: prints heartbeats on stdout, says hello on stderr, and behaves per its "run object".
RUNNER = """
import signal, sys, time
from datetime import UTC, datetime
from storage.heartbeats import Heartbeat, encode_heartbeat

mode = sys.argv[1]
seq = 0
def beat(final=False):
    global seq
    seq += 1
    hb = Heartbeat(user_id="usr_1", job_id="job_1", attempt=1, seq=seq, gpu_type="cpu", gpu_count=1,
                   gpu_ms=10, step=seq, loss=None, tokens=0, at=datetime.now(UTC), final=final)
    sys.stdout.buffer.write(encode_heartbeat(hb) + b"\\n")
    sys.stdout.buffer.flush()

stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term if mode != "stubborn" else signal.SIG_IGN)
print("runner says hello", file=sys.stderr)
beat(); beat()
if mode == "exit3":
    sys.exit(3)
print("not a heartbeat")
while not stopping:
    time.sleep(0.01)
beat(final=True)
"""


@pytest.fixture
def runner_script(tmp_path: Path) -> Path:
    path = tmp_path / "runner.py"
    path.write_text(RUNNER)
    return path


def request(mode: str, run_id: str = "job_1-1-abc") -> LaunchRequest:
    return LaunchRequest(
        run_id=run_id,
        user_id="usr_1",
        job_id="job_1",
        attempt=1,
        bucket_url="file:///nowhere",
        run_object=mode,
        gpu_type="cpu",
        gpu_count=1,
    )


@pytest.fixture
def relayed() -> list[Heartbeat]:
    return []


@pytest.fixture
def backend(runner_script: Path, tmp_path: Path, relayed: list[Heartbeat]) -> LocalSubprocessBackend:
    cwd = Path(__file__).resolve().parents[3]
    return LocalSubprocessBackend(
        on_heartbeat=relayed.append,
        log_dir=tmp_path / "logs",
        cwd=cwd,
        env={"PYTHONPATH": str(cwd)},
        argv=lambda r: [sys.executable, str(runner_script), r.run_object],
    )


def test_it_implements_the_backend_protocol(backend: LocalSubprocessBackend) -> None:
    assert isinstance(backend, LaunchBackend)


def test_a_run_is_reported_ended_with_its_status_after_all_its_heartbeats_are_relayed(
    backend: LocalSubprocessBackend, relayed: list[Heartbeat], tmp_path: Path
) -> None:
    backend.launch(request("exit3"))
    status = wait_for(lambda: (s := backend.status("job_1-1-abc")).running is False and s, timeout=20)
    assert status.exit_code == 3
    assert [h.seq for h in relayed] == [1, 2]
    assert "runner says hello" in (tmp_path / "logs" / "job_1-1-abc.log").read_text()
    backend.forget("job_1-1-abc")
    with pytest.raises(KeyError):
        backend.status("job_1-1-abc")


def test_stop_asks_the_runner_to_end_gracefully(
    backend: LocalSubprocessBackend, relayed: list[Heartbeat]
) -> None:
    backend.launch(request("wait"))
    wait_for(lambda: len(relayed) == 2, timeout=20)
    assert backend.status("job_1-1-abc").running
    backend.stop("job_1-1-abc")
    status = wait_for(lambda: (s := backend.status("job_1-1-abc")).running is False and s, timeout=20)
    assert status.exit_code == 0
    assert [h.final for h in relayed] == [False, False, True]


def test_close_stops_every_run_and_kills_one_that_will_not_end(
    backend: LocalSubprocessBackend, relayed: list[Heartbeat]
) -> None:
    backend.launch(request("wait", "polite"))
    backend.launch(request("stubborn", "stubborn"))
    wait_for(lambda: len(relayed) == 4, timeout=20)
    started = time.monotonic()
    backend.close(timeout=1.0)
    assert time.monotonic() - started < 10
    assert backend.status("polite").exit_code == 0
    assert backend.status("stubborn").exit_code == -9


def test_a_run_id_is_launched_once_and_a_missing_program_fails_to_launch(
    backend: LocalSubprocessBackend, tmp_path: Path
) -> None:
    backend.launch(request("exit3"))
    with pytest.raises(LaunchFailed, match="already launched"):
        backend.launch(request("exit3"))
    broken = LocalSubprocessBackend(argv=lambda r: [str(tmp_path / "no-such-program")])
    with pytest.raises(LaunchFailed, match="cannot start"):
        broken.launch(request("exit3", "other"))
