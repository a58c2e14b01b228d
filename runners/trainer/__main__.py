"""``python -m runners.trainer --run run.yaml``: one training attempt as a child process of the runner.

stdout carries only JSON-line events (``runners.trainer.events``); everything else a library
prints goes to stderr. SIGTERM, SIGINT or the stop file (``run.yaml: stop_file``, default
``<output_dir>/STOP``) make it save a checkpoint at the next step boundary and exit.

Exit status: 0 succeeded, 3 stopped (checkpoint saved), 2 bad input (do not retry),
1 anything else (retry from the last checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from runners.trainer.sinks import StopSignal

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="the attempt's run.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args(argv)
    # The trainer only reads local folders: never wait ~50 s on an unreachable hub.
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)
    events = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from runners.trainer.sinks import StopSignal

    stop = StopSignal().install()
    return run(args.run, events, stop, threads=args.threads)


def run(run_yaml: Path, events: IO[bytes], stop: StopSignal, *, threads: int | None = None) -> int:
    """Read the spec, train, and report the outcome on ``events``; return the exit status."""
    from domain.errors import PlatformError
    from runners.trainer.events import Error
    from runners.trainer.run_spec import read_run_spec
    from runners.trainer.sinks import JsonLinesSink

    sink = JsonLinesSink(events, stop)
    try:
        spec = read_run_spec(run_yaml)
        stop.stop_file = spec.stop_path
        import torch
        from transformers.utils import logging as hf_logging

        from runners.trainer.recipe import run_training

        hf_logging.disable_progress_bar()  # "Loading weights" bars would fill job.log

        if threads:
            torch.set_num_threads(threads)
        result = run_training(spec, sink)
    except PlatformError as exc:
        sink.emit(Error(code=exc.code, message=exc.message, where=exc.where, retryable=False))
        return EXIT_INVALID
    except Exception as exc:
        traceback.print_exc()
        sink.emit(Error(code="internal", message=f"{type(exc).__name__}: {exc}", where=None, retryable=True))
        return EXIT_FAILED
    sink.emit(result)
    return EXIT_SUCCEEDED if result.status == "succeeded" else EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
