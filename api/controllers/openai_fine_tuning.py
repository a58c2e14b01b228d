"""``/v1/files`` and ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API over the caller's datasets and jobs.

The official clients work as they are (``client.files.create(file=..., purpose="fine-tune")``,
``client.fine_tuning.jobs.create(model=..., training_file=...)``); the same files and jobs are at
``/datasets`` and ``/fine-tune`` (``api.services.fine_tuning``). Errors come in OpenAI's shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from api import openai_ft_schemas as ft
from api.deps import PathId
from api.errors import documented
from api.openai_schemas import OpenAIErrorBody
from api.services.datasets import DatasetService
from api.services.fine_tuning import PURPOSE, FineTuningService
from api.uploads import FormFile, FormUploadOperation
from domain.errors import ValidationFailed
from runtime.context import Runtime

Limit = Annotated[int, Parameter(ge=1, le=100, description="at most this many")]
After = Annotated[
    str | None, Parameter(max_length=200, description="the id of the last object of the previous page")
]


def _check_purpose(fields: dict[str, str]) -> None:
    purpose = fields.get("purpose")
    if purpose != PURPOSE:
        shown = "none" if purpose is None else repr(purpose[:40])
        raise ValidationFailed(f"purpose must be 'fine-tune' (got {shown})", where="purpose")


class OpenAIFilesController(Controller):
    path = "/v1/files"
    tags = ["openai"]

    @post(
        "",
        operation_id="create_openai_file",
        status_code=200,
        responses=documented(403, 413, 415, shape=OpenAIErrorBody),
        operation_class=FormUploadOperation,
        request_max_body_size=None,  # the dataset service enforces the upload limit (413) and the quota (403)
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        datasets: NamedDependency[DatasetService],
        fine_tuning: NamedDependency[FineTuningService],
    ) -> ft.FileObject:
        """Upload a JSONL file as a ``multipart/form-data`` form (``file``, ``purpose`` ``fine-tune``),
        streamed and validated line by line as at ``/datasets``: ``status`` ``processed``, or ``error``
        with the bad lines in ``status_details``."""
        form = FormFile(
            request.stream(),
            request.headers.get("content-type", ""),
            request.headers.get("content-encoding", ""),
        )
        await form.open()
        if "purpose" in form.fields:
            _check_purpose(form.fields)  # refused before a byte of the file is stored
        dataset = await datasets.upload(form.filename, form.body(_check_purpose), None)
        return fine_tuning.uploaded(dataset)

    @get("", operation_id="list_openai_files", responses=documented(shape=OpenAIErrorBody))
    async def list_files(
        self,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
        limit: Limit = 100,
        after: After = None,
        order: Annotated[Literal["asc", "desc"], Parameter(description="by creation time")] = "desc",
        purpose: Annotated[str | None, Parameter(max_length=40)] = None,
    ) -> ft.FileList:
        """The caller's files (datasets), newest first by default."""
        return await runtime.io(
            lambda: fine_tuning.files(limit=limit, after=after, order=order, purpose=purpose)
        )

    @get(
        "/{file_id:str}",
        operation_id="retrieve_openai_file",
        responses=documented(404, shape=OpenAIErrorBody),
    )
    async def retrieve(
        self,
        file_id: PathId,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
    ) -> ft.FileObject:
        return await runtime.io(fine_tuning.file, file_id)

    @delete(
        "/{file_id:str}",
        operation_id="delete_openai_file",
        status_code=200,
        responses=documented(404, 409, shape=OpenAIErrorBody),
        sync_to_thread=True,
    )
    def delete_file(self, file_id: PathId, fine_tuning: NamedDependency[FineTuningService]) -> ft.FileDeleted:
        """Delete the file (the dataset); 409 while a queued or running job uses it."""
        return fine_tuning.delete_file(file_id)


class OpenAIFineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["openai"]

    @post(
        "",
        operation_id="create_fine_tuning_job",
        status_code=200,
        responses=documented(403, 404, 409, 422, 429, shape=OpenAIErrorBody),
        sync_to_thread=True,
    )
    def create(
        self, data: JSONBody[ft.FineTuningJobCreate], fine_tuning: NamedDependency[FineTuningService]
    ) -> ft.FineTuningJob:
        """Start a supervised fine-tuning job (the same job as ``POST /fine-tune/{user}/start``)."""
        return fine_tuning.create(data)

    @get("", operation_id="list_fine_tuning_jobs", responses=documented(shape=OpenAIErrorBody))
    async def list_jobs(
        self,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
        limit: Limit = 20,
        after: After = None,
    ) -> ft.FineTuningJobList:
        """The caller's jobs, newest first, after the job ``after``."""
        return await runtime.io(lambda: fine_tuning.list(limit=limit, after=after))

    @get(
        "/{fine_tuning_job_id:str}",
        operation_id="retrieve_fine_tuning_job",
        responses=documented(404, shape=OpenAIErrorBody),
    )
    async def retrieve(
        self,
        fine_tuning_job_id: PathId,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
    ) -> ft.FineTuningJob:
        return await runtime.io(fine_tuning.job, fine_tuning_job_id)

    @post(
        "/{fine_tuning_job_id:str}/cancel",
        operation_id="cancel_fine_tuning_job",
        status_code=200,
        responses=documented(404, 409, shape=OpenAIErrorBody),
        sync_to_thread=True,
    )
    def cancel(
        self, fine_tuning_job_id: PathId, fine_tuning: NamedDependency[FineTuningService]
    ) -> ft.FineTuningJob:
        """Cancel the job (a running one saves a checkpoint first); 409 once it has ended."""
        return fine_tuning.cancel(fine_tuning_job_id)

    @post(
        "/{fine_tuning_job_id:str}/pause",
        operation_id="pause_fine_tuning_job",
        status_code=200,
        responses=documented(404, 409, shape=OpenAIErrorBody),
        sync_to_thread=True,
    )
    def pause(
        self, fine_tuning_job_id: PathId, fine_tuning: NamedDependency[FineTuningService]
    ) -> ft.FineTuningJob:
        """Pause the job: a running one saves a checkpoint, ends its attempt and releases its
        hardware (nothing is billed while paused); 409 once it has ended or is paused already."""
        return fine_tuning.pause(fine_tuning_job_id)

    @post(
        "/{fine_tuning_job_id:str}/resume",
        operation_id="resume_fine_tuning_job",
        status_code=200,
        responses=documented(404, 409, shape=OpenAIErrorBody),
        sync_to_thread=True,
    )
    def resume(
        self, fine_tuning_job_id: PathId, fine_tuning: NamedDependency[FineTuningService]
    ) -> ft.FineTuningJob:
        """Resume a paused job: queued again, its next attempt continues from the checkpoint its
        pause saved; 409 unless it is paused."""
        return fine_tuning.resume(fine_tuning_job_id)

    @get(
        "/{fine_tuning_job_id:str}/events",
        operation_id="list_fine_tuning_events",
        responses=documented(404, shape=OpenAIErrorBody),
    )
    async def events(
        self,
        fine_tuning_job_id: PathId,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
        limit: Limit = 20,
        after: After = None,
    ) -> ft.FineTuningEventList:
        """The job's events, newest first: ``metrics`` for each reported step, ``message`` for the rest."""
        return await runtime.io(lambda: fine_tuning.events(fine_tuning_job_id, limit=limit, after=after))

    @get(
        "/{fine_tuning_job_id:str}/checkpoints",
        operation_id="list_fine_tuning_checkpoints",
        responses=documented(404, shape=OpenAIErrorBody),
    )
    async def checkpoints(
        self,
        fine_tuning_job_id: PathId,
        fine_tuning: NamedDependency[FineTuningService],
        runtime: NamedDependency[Runtime],
        limit: Limit = 10,
        after: After = None,
    ) -> ft.FineTuningCheckpointList:
        """The job's checkpoints that can still be used, newest first, with the losses at their step."""
        return await runtime.io(lambda: fine_tuning.checkpoints(fine_tuning_job_id, limit=limit, after=after))
