"""A job page's live updates: one server-sent-event stream per open page.

The server looks at the job once every ``POLL_S`` (its ``status.json``, what was appended to its
metrics and its log since the last look: ``api.services.metrics.MetricsReader``,
``api.streams.read_from``) and sends only what changed, at most one round of events a look (a job
training 100 steps a second sends one ``metrics`` event a second, not one per step; only a log read
short of its backlog looks again at once):

- ``metrics``: ``{"train": [...], "eval": [...]}``, the new points of the loss curves;
- ``status``: the page's figures (``api.console.panels.job_panel``) when any changed;
- ``checkpoints``: the job's checkpoint list, when a checkpoint was saved;
- ``log``: the lines appended to the log;
- ``end``: the job reached a terminal state; the stream ends and the page closes it.

Each event's id is ``<last step>.<log offset>``: a browser that reconnects sends it back as
``Last-Event-ID`` and the stream resumes after it. A stream lasts at most ``MAX_S`` (the browser
reconnects where it left off).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from litestar.response import ServerSentEventMessage

from api.console.panels import job_panel
from api.services import BillingService, JobService
from api.services.metrics import Curves, MetricsService
from api.streams import read_from
from domain.errors import NotFound
from runtime.context import Runtime

__all__ = ["POLL_S", "job_updates", "resume_point"]

POLL_S = 1.0
MAX_S = 1800.0
_LOG_AT_MOST = 64 << 10


def resume_point(last_event_id: str | None, after_step: int, log_offset: int) -> tuple[int, int]:
    """(after_step, log_offset) to resume from: the ``Last-Event-ID`` when it is one of ours."""
    if last_event_id:
        step, _, offset = last_event_id.partition(".")
        if step.isdigit() and offset.isdigit():
            return int(step), int(offset)
    return after_step, log_offset


async def job_updates(
    runtime: Runtime,
    user_id: str,
    job_id: str,
    *,
    after_step: int,
    log_offset: int,
    poll_s: float = POLL_S,
    max_s: float = MAX_S,
) -> AsyncIterator[ServerSentEventMessage]:
    """The events of one open job page (module docstring), until the job ends or ``max_s`` passed."""
    jobs, billing = JobService(runtime, user_id), BillingService(runtime, user_id)
    reader, curves = MetricsService(runtime, user_id).reader(job_id), Curves()
    shown: dict[str, Any] | None = None
    waited = 0.0
    while waited < max_s:
        try:
            status = await runtime.io(jobs.status, job_id)
        except NotFound:
            yield ServerSentEventMessage(event="end", data="gone")
            return
        new = [p for p in curves.add(await runtime.io(reader.read, status.attempt)) if p.step > after_step]
        after_step = max([after_step, *(p.step for p in new)])
        names = jobs.log_objects(job_id, status.attempt)
        log = await runtime.io(read_from, runtime.bucket, names, log_offset)
        behind = len(log) >= _LOG_AT_MOST  # more log waits: read on at once
        log = log[: log.rfind(b"\n") + 1] if behind else log
        log_offset += len(log)
        event_id = f"{after_step}.{log_offset}"
        if new:
            train = [p for p in new if p.loss is not None]
            evals = [p for p in new if p.eval_loss is not None]
            data = msgspec.json.encode({"train": train, "eval": evals}).decode()
            yield ServerSentEventMessage(event="metrics", data=data, id=event_id)
        panel = job_panel(status, await runtime.io(billing.usage))
        if shown is not None and panel["checkpoints"] != shown["checkpoints"]:
            listing = await runtime.io(jobs.checkpoints, job_id)
            yield ServerSentEventMessage(event="checkpoints", data=msgspec.json.encode(listing).decode())
        if panel != shown:
            shown = panel
            data = msgspec.json.encode(panel).decode()
            yield ServerSentEventMessage(event="status", data=data, id=event_id)
        if log:
            yield ServerSentEventMessage(event="log", data=log.decode(errors="replace"), id=event_id)
        if panel["terminal"]:
            yield ServerSentEventMessage(event="end", data=status.status, id=event_id)
            return
        if not behind:  # one round a poll: a job that trains fast would flood the page with events
            await anyio.sleep(poll_s)
        if not (new or log):
            waited += poll_s
