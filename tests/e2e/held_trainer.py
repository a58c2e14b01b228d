"""The real job runner and trainer, with the trainer held at its first checkpoint: a test acts
mid-run on an event (the checkpoint is recorded) instead of racing the run to its end.

``python -m tests.e2e.held_trainer runner <bucket-url> <run.yaml object>`` is
``python -m runners.job_runner`` whose trainer is ``python -m tests.e2e.held_trainer trainer``:
``python -m runners.trainer``, except that an attempt starting from scratch holds once it has
reported its first checkpoint, until it is stopped (stop file, SIGTERM) or killed. A resumed
attempt runs as is. ``held_runner_argv`` is the command for a ``LocalSubprocessBackend``.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from runners.backends import LaunchRequest

__all__ = ["held_runner_argv"]

_MODULE = [sys.executable, "-m", "tests.e2e.held_trainer"]


def held_runner_argv(request: LaunchRequest) -> list[str]:
    """``LocalSubprocessBackend(argv=...)``: the job runner with the held trainer."""
    return [*_MODULE, "runner", request.bucket_url, request.run_object]


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
        report = JsonLinesSink.on_checkpoint

        def report_then_hold(self: JsonLinesSink, step: int, path: str) -> None:
            report(self, step, path)  # the runner uploads and records it meanwhile
            while not self.should_stop():
                time.sleep(0.05)

        JsonLinesSink.on_checkpoint = report_then_hold  # type: ignore[method-assign]
    return main(argv)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    sys.exit({"runner": _runner, "trainer": _trainer}[role](rest))
