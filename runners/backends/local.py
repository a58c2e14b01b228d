"""``LocalSubprocessBackend``: each job runner is a child process of this one (the default).

The runner's stdout carries its heartbeats (``heartbeat_url: "stdout:"``, see
``runners.heartbeat_relay``); a thread per run relays them to ``on_heartbeat``. A run
counts as ended only once its process has exited and its last heartbeat was relayed. The
runner's stderr goes to ``log_dir/<run_id>.log`` (or this process's stderr). Each runner
gets its own session, so a Ctrl-C at the terminal reaches the dispatcher, which then stops
its runs gracefully (``close``), and not the runners directly.

Hardware: it offers ``cpu`` x1 (this machine is one CPU unit, whatever its cores) and the CUDA
devices torch sees, by name (``domain.gpu_types.gpu_type_of_device``: a device whose name no
GPU type lists is not offered, and is logged). They are probed once, in a child process, so
this process never initialises CUDA, and only where an NVIDIA driver is present. A run is
placed on the first devices of its type that no other run of this backend uses (shared,
with a warning, when all are busy: the dispatcher's ``max_concurrent`` normally prevents it)
and sees only them (``CUDA_VISIBLE_DEVICES``); a ``cpu`` run sees no GPU at all.

Adoption: with a ``log_dir``, each launch also writes ``<run_id>.run.json`` there (the runner's
pid and its start time in the kernel's ticks, the job, attempt and placement), removed by
``forget``. A dispatcher restarted on the same home reads them (``alive_runs``: a record whose
process is gone, or whose pid now names another process, is dropped) and ``adopt``s the runs still
going. An adopted runner is no child of this process: its liveness is read from ``/proc``, its
exit status is unknown (None: the dispatcher reads the outcome from the job's events anyway), it
is stopped by SIGTERM to its session, and its heartbeats must not need this process (a
``pubsub://`` heartbeat URL: the stdout relay died with the old dispatcher).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import msgspec

from domain.gpu_types import CPU, gpu_type_of_device
from domain.hardware import describe_offers
from domain.placement import Placement
from runners.backends.base import AliveRun, LaunchFailed, LaunchRequest, NotPlaceable, RunStatus
from runners.heartbeat_relay import relay_heartbeats
from storage.heartbeats import Heartbeat

__all__ = [
    "CUDA_VISIBLE_DEVICES",
    "LOCAL_NODE",
    "LocalSubprocessBackend",
    "cuda_device_names",
    "local_offers",
]

log = logging.getLogger(__name__)

Argv = Callable[[LaunchRequest], list[str]]

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
LOCAL_NODE = "local"
"""``Placement.node`` of every run of this backend."""
_NVIDIA_DRIVER = ("/proc/driver/nvidia", "/dev/nvidiactl")
_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps([torch.cuda.get_device_name(i) for i in range(n)]))"
)


def cuda_device_names(*, python: str = sys.executable, timeout_s: float = 120.0) -> list[str]:
    """The names of the CUDA devices torch sees here, by index (``torch.cuda.get_device_name``),
    asked of a child process; [] without an NVIDIA driver, without torch, or if the probe fails."""
    if not any(Path(p).exists() for p in _NVIDIA_DRIVER):
        return []
    try:
        done = subprocess.run(
            [python, "-c", _PROBE],
            capture_output=True,
            timeout=timeout_s,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=list[str])
    except (OSError, subprocess.SubprocessError, msgspec.DecodeError, IndexError) as exc:
        log.warning("no CUDA devices offered: probing them with torch failed: %s", exc)
        return []


def local_offers(device_names: Sequence[str]) -> dict[str, list[int]]:
    """The device indices of each GPU type among ``device_names`` (indices as torch numbers
    them), and ``cpu`` (no device). A device whose name no GPU type lists is left out (logged)."""
    devices: dict[str, list[int]] = {CPU: []}
    for index, name in enumerate(device_names):
        gpu_type = gpu_type_of_device(name)
        if gpu_type is None:
            log.warning("CUDA device %d (%r) is not offered: no GPU type lists that name", index, name)
            continue
        devices.setdefault(gpu_type, []).append(index)
    return devices


class _Run:
    """A run: a child (``proc``, ``relay``) or an adopted process (``proc`` None: ``pid``, ``started``)."""

    def __init__(
        self,
        pid: int,
        devices: list[int],
        *,
        proc: subprocess.Popen[bytes] | None = None,
        relay: threading.Thread | None = None,
        started: int | None = None,
    ) -> None:
        self.pid = pid
        self.proc = proc
        self.relay = relay
        self.devices = devices
        self.started = started

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.started is not None and _start_time(self.pid) == self.started


class _RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``<run_id>.run.json``: what a later dispatcher needs to adopt the run."""

    pid: int
    started: int
    devices: list[int]
    run: AliveRun


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of live process ``pid``; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


class LocalSubprocessBackend:
    """Runs job runners as local subprocesses.

    Args:
        on_heartbeat: receives every heartbeat a runner prints (e.g. a transport's publisher).
        log_dir: where each runner's stderr goes (``<run_id>.log``); None: inherit stderr.
        env: extra environment variables for the runners.
        cwd: the runners' working directory (None: this process's).
        argv: the command for a request (default ``LaunchRequest.argv``).
        devices: the CUDA device names by index (None: ``cuda_device_names()``, probed on first use).
    """

    def __init__(
        self,
        *,
        on_heartbeat: Callable[[Heartbeat], None] | None = None,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        argv: Argv | None = None,
        devices: Sequence[str] | None = None,
    ) -> None:
        self.on_heartbeat = on_heartbeat
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.cwd = cwd
        self.argv: Argv = argv or (lambda request: request.argv)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._device_names = None if devices is None else list(devices)
        self._devices: dict[str, list[int]] | None = None

    # ---- hardware ----

    def offers(self) -> dict[str, int]:
        """``cpu`` x1 and each named CUDA device type with its count."""
        return {gpu_type: len(indices) or 1 for gpu_type, indices in sorted(self._by_type().items())}

    def place(self, gpu_type: str, gpu_count: int) -> Placement:
        self._devices_for(gpu_type, gpu_count)
        return Placement(gpu_type=gpu_type, gpu_count=gpu_count, node=LOCAL_NODE)

    def _by_type(self) -> dict[str, list[int]]:
        if self._devices is None:
            names = cuda_device_names() if self._device_names is None else self._device_names
            self._devices = local_offers(names)
        return self._devices

    def _devices_for(self, gpu_type: str, gpu_count: int) -> list[int]:
        """The device indices a run of ``gpu_count`` x ``gpu_type`` gets ([] for cpu)."""
        offers = self.offers()
        if gpu_count > offers.get(gpu_type, 0):
            raise NotPlaceable(
                f"this machine has no {gpu_type} x{gpu_count}; it offers {describe_offers(offers)}"
            )
        if gpu_type == CPU:
            return []
        indices = self._by_type()[gpu_type]
        with self._lock:
            busy = {i for run in self._runs.values() if run.running() for i in run.devices}
        free = [i for i in indices if i not in busy]
        if len(free) < gpu_count:
            log.warning("all %s devices are busy: the run shares them", gpu_type)
            free = free + [i for i in indices if i in busy]
        return free[:gpu_count]

    # ---- runs ----

    def launch(self, request: LaunchRequest) -> Placement:
        with self._lock:
            if request.run_id in self._runs:
                raise LaunchFailed(f"run {request.run_id} was already launched")
        placement = request.placement or self.place(request.gpu_type, request.gpu_count)
        devices = self._devices_for(placement.gpu_type, placement.gpu_count)
        visible = _visible(devices)
        stderr: IO[bytes] | None = None
        try:
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                stderr = open(self.log_dir / f"{request.run_id}.log", "ab")  # noqa: SIM115 - the child owns it
            proc = subprocess.Popen(
                self.argv(request),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, **self.env, **request.env, CUDA_VISIBLE_DEVICES: visible},
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot start the job runner for {request.run_id}: {exc}") from exc
        finally:
            if stderr is not None:
                stderr.close()
        relay = threading.Thread(
            target=self._relay, args=(proc,), name=f"relay-{request.run_id}", daemon=True
        )
        relay.start()
        with self._lock:
            self._runs[request.run_id] = _Run(proc.pid, devices, proc=proc, relay=relay)
        self._record(request, placement, proc.pid, devices)
        log.info(
            "launched %s (pid %d) on %d x %s (CUDA devices: %s)",
            request.run_id,
            proc.pid,
            placement.gpu_count,
            placement.gpu_type,
            visible or "none",
        )
        return placement

    def status(self, run_id: str) -> RunStatus:
        run = self._run(run_id)
        if run.proc is None:  # adopted: no exit status to read
            return RunStatus(run_id, running=run.running())
        code = run.proc.poll()
        if code is None:
            return RunStatus(run_id, running=True)
        assert run.relay is not None
        run.relay.join(timeout=1.0)
        if run.relay.is_alive():  # a grandchild still holds the pipe: count it as running
            return RunStatus(run_id, running=True)
        return RunStatus(run_id, running=False, exit_code=code)

    def stop(self, run_id: str) -> None:
        run = self._run(run_id)
        if run.running():
            with contextlib.suppress(ProcessLookupError):
                if run.proc is not None:
                    run.proc.send_signal(signal.SIGTERM)
                else:
                    os.kill(run.pid, signal.SIGTERM)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
        if self.log_dir is not None:
            (self.log_dir / f"{run_id}.run.json").unlink(missing_ok=True)

    def pid(self, run_id: str) -> int:
        """The runner's process id."""
        return self._run(run_id).pid

    # ---- adoption ----

    def _record(self, request: LaunchRequest, placement: Placement, pid: int, devices: list[int]) -> None:
        started = _start_time(pid)
        if self.log_dir is None or started is None:
            return
        run = AliveRun(
            run_id=request.run_id,
            user_id=request.user_id,
            job_id=request.job_id,
            attempt=request.attempt,
            placement=placement,
        )
        record = _RunRecord(pid=pid, started=started, devices=devices, run=run)
        path = self.log_dir / f"{request.run_id}.run.json"
        path.with_suffix(".tmp").write_bytes(msgspec.json.encode(record))
        path.with_suffix(".tmp").replace(path)

    def _records(self) -> list[_RunRecord]:
        if self.log_dir is None or not self.log_dir.is_dir():
            return []
        records = []
        for path in sorted(self.log_dir.glob("*.run.json")):
            try:
                record = msgspec.json.decode(path.read_bytes(), type=_RunRecord)
            except (OSError, msgspec.DecodeError):
                log.warning("unreadable run record %s: ignored", path)
                continue
            if _start_time(record.pid) != record.started:  # ended (or the pid is another process's)
                path.unlink(missing_ok=True)
                continue
            records.append(record)
        return records

    def alive_runs(self) -> list[AliveRun]:
        with self._lock:
            known = set(self._runs)
        return [record.run for record in self._records() if record.run.run_id not in known]

    def adopt(self, run: AliveRun) -> None:
        record = next((r for r in self._records() if r.run.run_id == run.run_id), None)
        if record is None:
            raise KeyError(f"no live run {run.run_id} to adopt")
        with self._lock:
            self._runs[run.run_id] = _Run(record.pid, list(record.devices), started=record.started)
        log.info("adopted %s (pid %d)", run.run_id, record.pid)

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            runs = list(self._runs.items())
        for run_id, _ in runs:
            self.stop(run_id)
        deadline = time.monotonic() + timeout
        for run_id, run in runs:
            if run.proc is None:  # adopted: poll /proc
                while run.running() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if run.running():
                    log.warning("job runner %s did not end within %.0f s: killing it", run_id, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(run.pid, signal.SIGKILL)
                continue
            try:
                run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("job runner %s did not end within %.0f s: killing it", run_id, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
            assert run.relay is not None
            run.relay.join(timeout=5.0)

    def _run(self, run_id: str) -> _Run:
        with self._lock:
            return self._runs[run_id]

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            if self.on_heartbeat is None:
                for _ in proc.stdout:
                    pass
            else:
                relay_heartbeats(proc.stdout, self.on_heartbeat)


def _visible(devices: list[int]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for ``devices`` (indices as this process's torch numbers them, so
    mapped through this process's own ``CUDA_VISIBLE_DEVICES``); "" hides every GPU."""
    own = [d.strip() for d in os.environ.get(CUDA_VISIBLE_DEVICES, "").split(",") if d.strip()]
    return ",".join(own[i] if i < len(own) else str(i) for i in devices)
