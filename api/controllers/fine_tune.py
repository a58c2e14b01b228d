"""``/fine-tune``: start, list, status, stop, pause, resume, events and logs of fine-tuning jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import Stream

from api.deps import BaseModelFilter, PathId
from api.errors import documented
from api.guards import requires_owner, requires_self
from api.schemas import (
    CheckpointList,
    JobEvents,
    JobList,
    JobMetrics,
    JobStatus,
    StartJobRequest,
    StartJobResponse,
    StopJobResponse,
)
from api.services import JobService
from api.services.metrics import MetricsService
from api.services.pages import PageRequest
from api.streams import NO_COMPRESSION
from domain.job_states import JobState
from runtime.context import Runtime

TEXT = "text/plain; charset=utf-8"


class FineTuneController(Controller):
    path = "/fine-tune"
    tags = ["fine-tune"]

    @post(
        "/{user_id:str}/start",
        operation_id="start_job",
        responses=documented(
            403, 404, 409, meanings={422: "no launch backend offers the GPU type and count (GET /hardware)"}
        ),
        guards=[requires_self],
        sync_to_thread=True,
    )
    def start(
        self, user_id: PathId, data: JSONBody[StartJobRequest], jobs: NamedDependency[JobService]
    ) -> Response[StartJobResponse]:
        """Validate the config whole, then submit the job (201), or only check and estimate (dry_run, 200)."""
        reply = jobs.start(data)
        return Response(reply, status_code=200 if data.dry_run else 201)

    @get(
        "/{user_id:str}/list",
        operation_id="list_jobs",
        responses=documented(404),
        guards=[requires_owner],
    )
    async def list_jobs(
        self,
        user_id: PathId,
        jobs: NamedDependency[JobService],
        runtime: NamedDependency[Runtime],
        page: NamedDependency[PageRequest],
        base_model: BaseModelFilter = None,
        job_state: Annotated[
            str | None,
            QueryParameter(
                name="state",
                max_length=20,
                description="keep only jobs in this state",
                schema_extra={"enum": sorted(JobState)},
            ),
        ] = None,
    ) -> JobList:
        """The user's jobs: a page, newest first, with ``limit`` / ``after`` (``has_more``, ``next``);
        all of them, oldest first, without. ``state``, ``base_model`` and ``created_from`` /
        ``created_to`` keep only the jobs that match."""
        return await runtime.io(jobs.list, page, job_state, base_model)

    @get("/{job_id:str}/status", operation_id="job_status", responses=documented(404))
    async def status(
        self, job_id: PathId, jobs: NamedDependency[JobService], runtime: NamedDependency[Runtime]
    ) -> JobStatus:
        """State, progress, checkpoints, GPU time and cost so far."""
        return await runtime.io(jobs.status, job_id)

    @post(
        "/{job_id:str}/stop",
        operation_id="stop_job",
        responses=documented(404, 409),
        status_code=200,
        sync_to_thread=True,
    )
    def stop(self, job_id: PathId, jobs: NamedDependency[JobService]) -> StopJobResponse:
        """Ask the job to stop (it saves a checkpoint first); 409 when it has already ended."""
        return jobs.stop(job_id)

    @post(
        "/{job_id:str}/pause",
        operation_id="pause_job",
        responses=documented(404, 409),
        status_code=200,
        sync_to_thread=True,
    )
    def pause(self, job_id: PathId, jobs: NamedDependency[JobService]) -> StopJobResponse:
        """Pause the job: a running one saves a checkpoint, ends its attempt and releases its hardware
        (``pausing``, then ``paused``; nothing is billed while paused); one with nothing running is
        ``paused`` at once. 409 when it has ended or is pausing or paused already."""
        return jobs.pause(job_id)

    @post(
        "/{job_id:str}/resume",
        operation_id="resume_job",
        responses=documented(404, 409),
        status_code=200,
        sync_to_thread=True,
    )
    def resume(self, job_id: PathId, jobs: NamedDependency[JobService]) -> StopJobResponse:
        """Resume a paused job: queued again, it runs a new attempt from the checkpoint its pause saved
        (none: from the start). 409 unless it is paused."""
        return jobs.resume(job_id)

    @get("/{job_id:str}/checkpoints", operation_id="job_checkpoints", responses=documented(404))
    async def checkpoints(
        self, job_id: PathId, jobs: NamedDependency[JobService], runtime: NamedDependency[Runtime]
    ) -> CheckpointList:
        """The job's checkpoints, oldest first: id (``<job_id>:<step>``, what ``start_from`` takes),
        attempt, step, train and validation loss at that step, and whether it can still be used."""
        return await runtime.io(jobs.checkpoints, job_id)

    @get("/{job_id:str}/metrics", operation_id="job_metrics", responses=documented(404))
    async def metrics(
        self,
        job_id: PathId,
        metrics: NamedDependency[MetricsService],
        runtime: NamedDependency[Runtime],
        after_step: Annotated[
            int | None,
            Parameter(
                ge=0,
                le=1 << 40,
                description="only the points after this step",
                schema_extra={"minimum": 0},  # Litestar drops a bound of 0 from the schema
            ),
        ] = None,
    ) -> JobMetrics:
        """The train and validation loss curves, a point a logged step, oldest first (a step a later
        attempt ran again: its values); ``after_step`` (the ``last_step`` of the previous reply) asks
        for the newer points only."""
        return await runtime.io(metrics.metrics, job_id, after_step)

    @get("/{job_id:str}/events", operation_id="job_events", responses=documented(404))
    async def events(
        self, job_id: PathId, jobs: NamedDependency[JobService], runtime: NamedDependency[Runtime]
    ) -> JobEvents:
        """The job's history: state changes, progress, checkpoints, metered usage, alerts."""
        return await runtime.io(jobs.events, job_id)

    @get(
        "/{job_id:str}/logs",
        operation_id="job_logs",
        opt={NO_COMPRESSION: True},
        responses=documented(404),
        media_type=TEXT,
    )
    async def logs(
        self,
        job_id: PathId,
        jobs: NamedDependency[JobService],
        tail: Annotated[int | None, QueryParameter(ge=1, le=100_000)] = None,
        follow: FromQuery[bool] = False,
    ) -> Stream:
        """The training log (``tail``: the last N lines); ``follow`` keeps streaming until the job ends."""
        head, offset = await anyio.to_thread.run_sync(jobs.log_tail, job_id, tail)

        async def body() -> AsyncIterator[bytes]:
            if head:
                yield head
            if follow:
                async for chunk in jobs.follow_log(job_id, offset):
                    yield chunk

        return Stream(body(), media_type=TEXT)
