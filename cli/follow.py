"""``tune status --follow``: a job's progress as one line per change, or a live panel in a terminal.

A *change* is a change in anything a heartbeat alone does not move: the state, the step,
the epoch and the loss as shown, a checkpoint, an alert, a retry, the error. The figures
that tick with every heartbeat (GPU time, cost, tokens, timestamps, the log position) are
not changes: on their own they print at most one line per ``QUIET_S`` seconds, so a long
step still shows its cost growing while a 6-step job prints about 10 lines, not 100.

Where the lines go:

- piped or redirected (or ``--json``): the change lines only, plain text (or one JSON
  document per line), the same as a log would want;
- a terminal: the same change lines, above a live footer (rich ``Live``) that shows the
  latest figures and a step bar at every poll and is removed when the job ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from typing import Any

import msgspec

__all__ = ["QUIET_S", "TICKING", "Follower", "follow_job", "progress_line"]

QUIET_S = 30.0
"""The most often a line is printed for heartbeat figures alone (GPU time, cost)."""

TICKING = frozenset(
    {"position", "gpu_metrics", "cost", "cost_usd_micros", "tokens", "last_heartbeat_at", "updated_at"}
)
"""``JobStatus`` fields that move with every heartbeat: not a change on their own."""

_clock: Callable[[], float] = time.monotonic  # the tests' seam


def progress_line(job: Any) -> str:
    """One line of a ``JobStatus``: state, step, epoch, loss, GPU time, cost, what it is busy with."""
    from cli.output import duration_text, usd

    parts = [job.status or "?"]
    if job.step or job.total_steps:
        parts.append(f"step {job.step}" + (f"/{job.total_steps}" if job.total_steps else ""))
    if job.epoch is not None:
        parts.append(f"epoch {job.epoch:.2f}")
    if job.loss is not None:
        parts.append(f"loss {job.loss:.4f}")
    if job.gpu_metrics.gpu_ms:
        parts.append(f"gpu {duration_text(job.gpu_metrics.gpu_ms)}")
    parts.append(f"cost {usd(job.cost_usd_micros)}")
    if job.activity:
        parts.append(job.activity)  # e.g. converting the base model on its first use
    if job.error:
        parts.append(f"error: {job.error}")
    elif job.stop_reason:
        parts.append(f"stop: {job.stop_reason}")
    return "  ".join(parts)


def _change_key(job: Any) -> bytes:
    """Everything but the ticking figures, with epoch and loss rounded as the line shows them."""
    data = {k: v for k, v in msgspec.to_builtins(job).items() if k not in TICKING}
    if data.get("epoch") is not None:
        data["epoch"] = f"{data['epoch']:.2f}"
    if data.get("loss") is not None:
        data["loss"] = f"{data['loss']:.4f}"
    return msgspec.json.encode(data)


class Follower:
    """Decides which polled statuses are worth a line."""

    def __init__(self, *, quiet_s: float | None = None) -> None:
        self.quiet_s = QUIET_S if quiet_s is None else quiet_s
        self._key: bytes | None = None
        self._whole: bytes | None = None
        self._printed_at = 0.0

    def wants(self, job: Any, *, heartbeats: bool = True) -> bool:
        """Whether ``job`` gets a line: a change, or (``heartbeats``) new figures after ``quiet_s``."""
        key, whole, now = _change_key(job), msgspec.json.encode(job), _clock()
        fresh_figures = heartbeats and whole != self._whole and now - self._printed_at >= self.quiet_s
        if key == self._key and not fresh_figures:
            return False
        self._key, self._whole, self._printed_at = key, whole, now
        return True


def _plain_line(job_id: str, job: Any) -> str:
    return f"{time.strftime('%H:%M:%S')} {job_id}  {progress_line(job)}"


def _panel(job_id: str, job: Any) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    line = Text(f"{job_id}  {progress_line(job)}", style="bold")
    if not job.total_steps:
        return line
    bar = ProgressBar(total=job.total_steps, completed=min(job.step, job.total_steps), width=40)
    return Group(line, bar)


def follow_job(
    fetch: Callable[[], Any], job: Any, *, job_id: str, interval: float, json: bool, terminal: Container[str]
) -> Any:
    """Poll ``fetch()`` every ``interval`` seconds from ``job`` until its status is in ``terminal``;
    print as the module docstring says; return the last status."""
    from cli.output import stdout_console

    follower = Follower()
    console = stdout_console()
    if json or not console.is_terminal:
        while True:
            if follower.wants(job):
                text = msgspec.json.encode(job).decode() if json else _plain_line(job_id, job)
                print(text, flush=True)
            if job.status in terminal:
                return job
            time.sleep(interval)
            job = fetch()

    from rich.live import Live

    with Live(_panel(job_id, job), console=console, auto_refresh=False, transient=True) as live:
        while True:
            if follower.wants(job, heartbeats=False):  # the footer shows the figures
                live.console.print(_plain_line(job_id, job), markup=False, highlight=False)
            live.update(_panel(job_id, job), refresh=True)
            if job.status in terminal:
                return job
            time.sleep(interval)
            job = fetch()
