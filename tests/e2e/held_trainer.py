"""The real job runner and trainer, with the trainer held at its first checkpoint: a test acts
mid-run on an event (the checkpoint is recorded) instead of racing the run to its end (tiny-llama
trains ~150 steps a second on two cores: a few hundred steps are over before a poll sees them).

- ``python -m tests.e2e.held_trainer runner <bucket-url> <run.yaml object>``, or without ``runner``
  (what ``tune run dispatcher --runner-module tests.e2e.held_trainer`` runs): ``python -m
  runners.job_runner`` whose trainer is ``python -m tests.e2e.held_trainer trainer``.
- ``trainer``: ``python -m runners.trainer``, except that an attempt starting from scratch holds
  once it has reported its first checkpoint, until it is stopped (stop file, SIGTERM) or killed, or,
  where ``$TUNE_TEST_HOLD_UNTIL_GONE`` names a file, until that file is gone: then it trains on to
  its end. A resumed attempt runs as is.
- ``serve <file> [tune serve options]``: ``tune serve`` whose runners are held ones while ``<file>``
  exists (looked at each launch).

``held_runner_argv`` is the command for a ``LocalSubprocessBackend``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from runners.backends import LaunchRequest

__all__ = ["HOLD_UNTIL_GONE", "held_runner_argv", "held_serve_argv"]

HOLD_UNTIL_GONE = "TUNE_TEST_HOLD_UNTIL_GONE"
"""The environment variable naming a file: a held trainer trains on once it is gone."""
_MODULE = [sys.executable, "-m", "tests.e2e.held_trainer"]


def held_runner_argv(request: LaunchRequest) -> list[str]:
    """``LocalSubprocessBackend(argv=...)``: the job runner with the held trainer."""
    return [*_MODULE, "runner", request.bucket_url, request.run_object]


def held_serve_argv(hold: Path, *serve_args: str) -> list[str]:
    """``tune serve serve_args...`` whose runners are held ones while ``hold`` exists."""
    return [*_MODULE, "serve", str(hold), *serve_args]


def _runner(argv: list[str]) -> int:
    from runners import job_runner

    job_runner.JobRunner = functools.partial(  # type: ignore[misc]
        job_runner.JobRunner, trainer_command=[*_MODULE, "trainer"]
    )
    return job_runner.main(argv)


def _trainer(argv: list[str]) -> int:
    from runners.trainer.__main__ import main
    from runners.trainer.run_spec import read_run_spec
    from runners.trainer.sinks import JsonLinesSink

    if read_run_spec(Path(argv[argv.index("--run") + 1])).resume_from is None:
        report, release = JsonLinesSink.on_checkpoint, os.environ.get(HOLD_UNTIL_GONE)

        def report_then_hold(self: JsonLinesSink, step: int, path: str) -> None:
            report(self, step, path)  # the runner uploads and records it meanwhile
            JsonLinesSink.on_checkpoint = report  # type: ignore[method-assign]  # held once
            while not self.should_stop() and (release is None or Path(release).exists()):
                time.sleep(0.05)

        JsonLinesSink.on_checkpoint = report_then_hold  # type: ignore[method-assign]
    return main(argv)


def _serve(argv: list[str]) -> int:
    from cli.tune import main
    from runners.backends import base

    hold, plain = Path(argv.pop(0)), base.runner_argv

    def runner_argv(bucket_url: str, run_object: str, *, python: str = sys.executable) -> list[str]:
        if hold.exists():
            return [python, *_MODULE[1:], "runner", bucket_url, run_object]
        return plain(bucket_url, run_object, python=python)

    base.runner_argv = runner_argv
    sys.argv = ["tune", *argv]
    main()
    return 0


ROLES = {"runner": _runner, "trainer": _trainer, "serve": _serve}

if __name__ == "__main__":
    args = sys.argv[1:]
    role = args.pop(0) if args and args[0] in ROLES else "runner"
    sys.exit(ROLES[role](args))
