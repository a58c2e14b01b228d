"""Every launch backend behaves alike (``runners.backends.base.LaunchBackend``): launch once, status,
graceful stop, close (killing what will not end), forget. A new backend adds itself to ``BACKENDS``.

The local backend also relays heartbeats from a runner's stdout and keeps its log: tested below.
The Ray backend runs on a real local Ray head (``ray_head``: slow; skipped where ray is missing), its
runs stopped with a short ``stop_wait_s`` so that close's kill comes within the test's patience.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runners.backends import (
    LaunchBackend,
    LaunchFailed,
    LaunchRequest,
    LocalSubprocessBackend,
    RayJobsBackend,
    RunStatus,
)
from storage.heartbeats import Heartbeat
from tests.unit.runners.builders import wait_for

# A stand-in job runner: prints heartbeats on stdout, says hello on stderr, and behaves per its "run object".
RUNNER = """
import os, signal, sys, time
from datetime import UTC, datetime
from storage.heartbeats import Heartbeat, encode_heartbeat

mode = sys.argv[1]
seq = 0
def beat(final=False):
    global seq
    seq += 1
    hb = Heartbeat(user_id="usr_1", job_id="job_1", attempt=1, seq=seq, gpu_type="cpu", gpu_count=1,
                   gpu_ms_total=10 * seq, step=seq, loss=None, tokens=0, at=datetime.now(UTC), final=final)
    sys.stdout.buffer.write(encode_heartbeat(hb) + b"\\n")
    sys.stdout.buffer.flush()

stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term if mode != "stubborn" else signal.SIG_IGN)
print("runner says hello", file=sys.stderr)
beat(); beat()
with open(sys.argv[2], "w") as ready:  # ready: SIGTERM is handled from here on
    ready.write(os.environ.get("TUNE_HEARTBEAT_SECRET", ""))  # what the launch put in its environment
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


def request(mode: str, run_id: str = "job_1-1-abc", secret: str | None = None) -> LaunchRequest:
    return LaunchRequest(
        heartbeat_secret=secret,
        run_id=run_id,
        user_id="usr_1",
        job_id="job_1",
        attempt=1,
        bucket_url="file:///nowhere",
        run_object=mode,
        gpu_type="cpu",
        gpu_count=1,
    )


LAUNCH = request
"""``request`` under a name a test taking pytest's ``request`` fixture can use."""


@pytest.fixture
def relayed() -> list[Heartbeat]:
    return []


Argv = Callable[[LaunchRequest], list[str]]


ROOT = Path(__file__).resolve().parents[2]


def _local(argv: Argv, tmp_path: Path, relayed: list[Heartbeat]) -> LaunchBackend:
    cwd = ROOT
    return LocalSubprocessBackend(
        on_heartbeat=relayed.append,
        log_dir=tmp_path / "logs",
        cwd=cwd,
        env={"PYTHONPATH": str(cwd)},
        argv=argv,
    )


def _ray(
    argv: Argv, tmp_path: Path, relayed: list[Heartbeat], fixtures: pytest.FixtureRequest
) -> LaunchBackend:
    return RayJobsBackend(
        fixtures.getfixturevalue("ray_head"),
        env={"PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        argv=argv,
        stop_wait_s=2,
        log_dir=tmp_path / "logs",
    )


BACKENDS: dict[str, Callable[..., LaunchBackend]] = {"local": _local, "ray": _ray}
"""Each backend, built to run ``argv`` instead of the job runner (the local one relays heartbeats to the
list; a Ray job's stdout goes to its log)."""
SLOW = {"ray"}


@pytest.fixture
def argv(runner_script: Path, tmp_path: Path) -> Argv:
    """The stand-in runner, told its mode and where to say it is ready."""
    return lambda r: [sys.executable, str(runner_script), r.run_object, str(tmp_path / f"{r.run_id}.ready")]


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.slow]) if name in SLOW else name for name in sorted(BACKENDS)
    ]
)
def backend(
    request: pytest.FixtureRequest, argv: Argv, tmp_path: Path, relayed: list[Heartbeat]
) -> Iterator[LaunchBackend]:
    extra = (request,) if request.param == "ray" else ()
    built = BACKENDS[request.param](argv, tmp_path, relayed, *extra)
    yield built
    built.close(timeout=0.5)  # nothing a test left going outlives it


@pytest.fixture
def run_id() -> str:
    """Unique per test: a Ray head (one per session) keeps every submission id it was given."""
    return f"job_1-1-{uuid.uuid4().hex[:8]}"


def _ended(backend: LaunchBackend, run_id: str) -> RunStatus:
    return wait_for(lambda: (s := backend.status(run_id)).running is False and s, timeout=20)


def _ready(tmp_path: Path, *run_ids: str) -> None:
    wait_for(lambda: all((tmp_path / f"{r}.ready").exists() for r in run_ids), timeout=20)


def test_it_implements_the_backend_protocol(backend: LaunchBackend) -> None:
    assert isinstance(backend, LaunchBackend)


def test_a_run_is_reported_ended_with_its_exit_status_until_forgotten(
    backend: LaunchBackend, run_id: str
) -> None:
    backend.launch(request("exit3", run_id))
    assert _ended(backend, run_id).exit_code == 3
    backend.forget(run_id)
    with pytest.raises(KeyError):
        backend.status(run_id)


def test_stop_asks_the_runner_to_end_gracefully(backend: LaunchBackend, tmp_path: Path, run_id: str) -> None:
    backend.launch(request("wait", run_id))
    _ready(tmp_path, run_id)
    assert backend.status(run_id).running
    backend.stop(run_id)
    assert _ended(backend, run_id).exit_code == 0


def test_close_stops_every_run_and_kills_one_that_will_not_end(
    backend: LaunchBackend, tmp_path: Path, run_id: str
) -> None:
    polite, stubborn = f"polite-{run_id}", f"stubborn-{run_id}"
    backend.launch(request("wait", polite))
    backend.launch(request("stubborn", stubborn))
    _ready(tmp_path, polite, stubborn)
    started = time.monotonic()
    backend.close(timeout=1.0)
    assert time.monotonic() - started < 10
    assert backend.status(polite).exit_code == 0
    assert backend.status(stubborn).exit_code == -9


def test_the_runner_and_only_it_gets_its_attempt_s_heartbeat_secret(
    backend: LaunchBackend, tmp_path: Path, run_id: str
) -> None:
    backend.launch(request("exit3", run_id, secret="s3cret-of-job_1-1"))
    _ended(backend, run_id)
    assert (tmp_path / f"{run_id}.ready").read_text() == "s3cret-of-job_1-1"
    assert "s3cret" not in repr(request("exit3", secret="s3cret-of-job_1-1"))


def test_a_run_id_is_launched_once(backend: LaunchBackend, run_id: str) -> None:
    backend.launch(request("exit3", run_id))
    with pytest.raises(LaunchFailed, match="already launched"):
        backend.launch(request("exit3", run_id))


def test_a_restarted_dispatcher_s_backend_adopts_the_run_still_going_by_its_run_id(
    backend: LaunchBackend,
    argv: Argv,
    tmp_path: Path,
    relayed: list[Heartbeat],
    run_id: str,
    request: pytest.FixtureRequest,
) -> None:
    """A second backend built as the first (the dispatcher after a SIGKILL and a restart) finds the
    run by its id with its job and attempt, adopts it, sees it running and stops it gracefully."""
    name = request.node.callspec.params["backend"]
    launch = LAUNCH("wait", run_id)
    backend.launch(launch)
    _ready(tmp_path, run_id)
    again = BACKENDS[name](argv, tmp_path, relayed, *((request,) if name == "ray" else ()))
    alive = {run.run_id: run for run in again.alive_runs()}
    assert run_id in alive
    run = alive[run_id]
    assert (run.user_id, run.job_id, run.attempt) == (launch.user_id, launch.job_id, 1)
    assert run.placement.gpu_type == "cpu"
    again.adopt(run)
    assert run_id not in {r.run_id for r in again.alive_runs()}  # adopted once
    assert again.status(run_id).running
    again.stop(run_id)
    wait_for(lambda: not again.status(run_id).running, timeout=20)
    assert _ended(backend, run_id).exit_code == 0  # the runner ended gracefully (its first parent says)


# -- the local backend: stdout heartbeats relayed, a log per run ----------------------------------


def test_local_relays_every_heartbeat_before_the_run_is_reported_ended(
    argv: Argv, tmp_path: Path, relayed: list[Heartbeat]
) -> None:
    backend = _local(argv, tmp_path, relayed)
    backend.launch(request("exit3"))
    _ended(backend, "job_1-1-abc")
    assert [h.seq for h in relayed] == [1, 2]
    assert "runner says hello" in (tmp_path / "logs" / "job_1-1-abc.log").read_text()


def test_local_relays_the_final_heartbeat_of_a_graceful_stop(
    argv: Argv, tmp_path: Path, relayed: list[Heartbeat]
) -> None:
    backend = _local(argv, tmp_path, relayed)
    backend.launch(request("wait"))
    wait_for(lambda: len(relayed) == 2, timeout=20)
    backend.stop("job_1-1-abc")
    _ended(backend, "job_1-1-abc")
    assert [h.final for h in relayed] == [False, False, True]


def test_local_a_missing_program_fails_to_launch(tmp_path: Path) -> None:
    broken = LocalSubprocessBackend(argv=lambda r: [str(tmp_path / "no-such-program")])
    with pytest.raises(LaunchFailed, match="cannot start"):
        broken.launch(request("exit3", "other"))
