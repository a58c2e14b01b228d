"""The console's jobs pages: the list (filtered by state, in pages), a job's page, its live
stream (``api.console.live``), and its stop button.

Every read goes through the services the JSON API uses (``JobService``, ``MetricsService``,
``BillingService``) on the signed-in user's partition: another user's job is the API's 404.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter
from litestar.response import Redirect, ServerSentEvent, Template

from api.auth import Principal
from api.console.live import job_updates, resume_point
from api.console.panels import job_panel, job_row
from api.deps import PathId
from api.services import BillingService, JobService
from api.services.metrics import MetricsService
from api.services.pages import PageRequest
from api.streams import NO_COMPRESSION
from domain.job_states import JobState
from runtime.context import Runtime

__all__ = ["LOG_LINES", "PAGE_SIZE", "JobPages"]

PAGE_SIZE = 25
LOG_LINES = 200
STATES = sorted(JobState)

StateFilter = Annotated[str | None, QueryParameter(name="state", max_length=20)]


class JobPages(Controller):
    """``/console/jobs``: the list, a job's page, its live stream, stop."""

    path = "/jobs"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def list_page(
        self,
        caller: NamedDependency[Principal],
        jobs: NamedDependency[JobService],
        request: Request[Any, Any, Any],
        job_state: StateFilter = None,
        after: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> Template:
        """The signed-in user's jobs, newest first, ``PAGE_SIZE`` a page; an htmx request (the state
        filter, the next page) gets the table alone."""
        state = job_state or None
        page = jobs.list(PageRequest(limit=PAGE_SIZE, after=after), state)
        rows = [job_row(jobs.status(row.job_id)) for row in page.jobs]
        context = {
            "title": "Jobs",
            "nav": "jobs",
            "caller": caller,
            "rows": rows,
            "state": state or "",
            "states": STATES,
            "next": page.next,
        }
        partial = bool(getattr(request, "htmx", False)) and not request.headers.get("hx-boosted")
        return Template("jobs_table.html" if partial else "jobs.html", context=context)

    @get("/{job_id:str}", sync_to_thread=True)
    def job_page(
        self,
        job_id: PathId,
        caller: NamedDependency[Principal],
        jobs: NamedDependency[JobService],
        metrics: NamedDependency[MetricsService],
        billing: NamedDependency[BillingService],
    ) -> Template:
        """The job's curves, progress, GPU time and cost against its limits, log tail, checkpoints,
        alerts and stop button; live from ``/console/jobs/{job_id}/live``."""
        status = jobs.status(job_id)
        curves = metrics.metrics(job_id)
        log, log_offset = jobs.log_tail(job_id, LOG_LINES)
        context = {
            "title": f"Job {job_id}",
            "nav": "jobs",
            "caller": caller,
            "job": status,
            "panel": job_panel(status, billing.usage()),
            "curves": msgspec.to_builtins(curves),
            "checkpoints": jobs.checkpoints(job_id).checkpoints,
            "log": log.decode(errors="replace"),
            "live": f"/console/jobs/{job_id}/live?after_step={curves.last_step}&log={log_offset}",
        }
        return Template("job.html", context=context)

    @get("/{job_id:str}/live", opt={NO_COMPRESSION: True})
    async def live(
        self,
        job_id: PathId,
        caller: NamedDependency[Principal],
        jobs: NamedDependency[JobService],
        runtime: NamedDependency[Runtime],
        request: Request[Any, Any, Any],
        after_step: Annotated[int, Parameter(ge=0, le=1 << 40)] = 0,
        log: Annotated[int, Parameter(ge=0, le=1 << 50)] = 0,
    ) -> ServerSentEvent:
        """The page's server-sent events (``api.console.live``); 404 unless the job is the caller's."""
        await runtime.io(jobs.status, job_id)
        after_step, log = resume_point(request.headers.get("last-event-id"), after_step, log)
        updates = job_updates(runtime, caller.user_id, job_id, after_step=after_step, log_offset=log)
        return ServerSentEvent(updates, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @post("/{job_id:str}/stop", sync_to_thread=True, status_code=303)
    def stop(self, job_id: PathId, jobs: NamedDependency[JobService]) -> Redirect:
        """Ask the job to stop (``POST /fine-tune/{job_id}/stop``), then show its page again."""
        jobs.stop(job_id, reason="stopped by the user from the console")
        return Redirect(f"/console/jobs/{job_id}", status_code=303)
