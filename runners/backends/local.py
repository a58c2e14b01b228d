"""``LocalSubprocessBackend``: each job runner is a child process of this one (the default).

The runner's stdout carries its heartbeats (``heartbeat_url: "stdout:"``, see
``runners.heartbeat_relay``); a thread per run relays them to ``on_heartbeat``. A run
counts as ended only once its process has exited and its last heartbeat was relayed. The
runner's stderr goes to ``log_dir/<run_id>.log`` (or this process's stderr). Each runner
gets its own session, so a Ctrl-C at the terminal reaches the dispatcher, which then stops
its runs gracefully (``close``), and not the runners directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from runners.backends.base import LaunchFailed, LaunchRequest, RunStatus
from runners.heartbeat_relay import relay_heartbeats
from storage.heartbeats import Heartbeat

__all__ = ["LocalSubprocessBackend"]

log = logging.getLogger(__name__)

Argv = Callable[[LaunchRequest], list[str]]


class _Run:
    def __init__(self, proc: subprocess.Popen[bytes], relay: threading.Thread) -> None:
        self.proc = proc
        self.relay = relay


class LocalSubprocessBackend:
    """Runs job runners as local subprocesses.

    Args:
        on_heartbeat: receives every heartbeat a runner prints (e.g. a transport's publisher).
        log_dir: where each runner's stderr goes (``<run_id>.log``); None: inherit stderr.
        env: extra environment variables for the runners.
        cwd: the runners' working directory (None: this process's).
        argv: the command for a request (default ``LaunchRequest.argv``).
    """

    def __init__(
        self,
        *,
        on_heartbeat: Callable[[Heartbeat], None] | None = None,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        argv: Argv | None = None,
    ) -> None:
        self.on_heartbeat = on_heartbeat
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.cwd = cwd
        self.argv: Argv = argv or (lambda request: request.argv)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def launch(self, request: LaunchRequest) -> None:
        with self._lock:
            if request.run_id in self._runs:
                raise LaunchFailed(f"run {request.run_id} was already launched")
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
                env={**os.environ, **self.env, **request.env},
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
            self._runs[request.run_id] = _Run(proc, relay)
        log.info("launched %s (pid %d)", request.run_id, proc.pid)

    def status(self, run_id: str) -> RunStatus:
        run = self._run(run_id)
        code = run.proc.poll()
        if code is None:
            return RunStatus(run_id, running=True)
        run.relay.join(timeout=1.0)
        if run.relay.is_alive():  # a grandchild still holds the pipe: count it as running
            return RunStatus(run_id, running=True)
        return RunStatus(run_id, running=False, exit_code=code)

    def stop(self, run_id: str) -> None:
        proc = self._run(run_id).proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def pid(self, run_id: str) -> int:
        """The runner's process id."""
        return self._run(run_id).proc.pid

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            runs = list(self._runs.items())
        for run_id, _ in runs:
            self.stop(run_id)
        deadline = time.monotonic() + timeout
        for run_id, run in runs:
            try:
                run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("job runner %s did not end within %.0f s: killing it", run_id, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
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
