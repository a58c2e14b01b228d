"""The real job runner with the fake trainer (``tests/unit/runners/fake_trainer.py``: no torch, a step
every ``$FAKE_STEP_S`` seconds), for a dispatcher that runs many jobs on a small machine.

``python -m tests.fake_job_runner <bucket-url> <run.yaml object>`` is ``python -m runners.job_runner``
whose trainer is the fake one (``tune run dispatcher --runner-module tests.fake_job_runner``), without
the stop gate (``runners.trainer.stop_gate``, which loads the model with torch). The
runner heartbeats as it always does; when an attempt's heartbeats end it writes to stderr (its log,
``$TUNE_HOME/runs/<run>.log``) how many it sent::

    heartbeats sent: job <job_id> attempt <n>: <seq of the final one>
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

__all__ = ["SENT", "main"]

FAKE_TRAINER = Path(__file__).parent / "unit" / "runners" / "fake_trainer.py"
SENT = re.compile(r"heartbeats sent: job (\S+) attempt (\d+): (\d+)")
"""The line each attempt ends with in its runner's log: job id, attempt, heartbeats sent."""


def main(argv: list[str]) -> int:
    from runners import heartbeat_emitter, job_runner
    from storage.heartbeats import Heartbeat

    close = heartbeat_emitter.HeartbeatEmitter.close

    def close_and_count(self: heartbeat_emitter.HeartbeatEmitter) -> Heartbeat:
        final = close(self)
        print(f"heartbeats sent: job {final.job_id} attempt {final.attempt}: {final.seq}", file=sys.stderr)
        return final

    heartbeat_emitter.HeartbeatEmitter.close = close_and_count  # type: ignore[method-assign]
    job_runner.JobRunner = functools.partial(  # type: ignore[misc]
        job_runner.JobRunner,
        trainer_command=[sys.executable, str(FAKE_TRAINER)],
        stop_gate_command=None,  # the fake model is no model: the gate would load torch to fail (20 s of CPU)
    )
    return job_runner.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
