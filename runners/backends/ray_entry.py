"""The entrypoint of a Ray job: ``python -m runners.backends.ray_entry <argv...>``.

It runs the job runner's command as its child and, when the child ends, prints its exit status
on a last line (``EXIT_MARKER``), which ``RayJobsBackend`` reads from the job's log: Ray reports a
stopped job ``STOPPED`` whatever its runner did, and only this line tells a runner that checkpointed
and exited 0 from one killed (no line: Ray's SIGKILL took both). Ray's stop signal goes to every
process of the job, so this one ignores SIGTERM and SIGINT and lets the runner handle its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys

__all__ = ["EXIT_MARKER", "exit_status_of", "main"]

EXIT_MARKER = "tune-runner-exit-status: "


def exit_status_of(log_text: str) -> int | None:
    """The runner's exit status printed in a job's log (negative: killed by that signal), or None."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(EXIT_MARKER):
            try:
                return int(line.removeprefix(EXIT_MARKER))
            except ValueError:
                return None
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m runners.backends.ray_entry <command...>", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as exc:
        print(f"cannot start the job runner: {exc}", file=sys.stderr, flush=True)
        return 127
    code = proc.wait()
    print(f"{EXIT_MARKER}{code}", flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
