"""The console's datasets pages: the list with the upload form, a dataset's page (its validation
report: each failing line and why), and delete.

The upload is the API's own (``DatasetService.upload``: the same streaming, limit, quota and
validation); the page script (``static/upload.js``) sends the file as the raw body with its CSRF
token in the ``X-CSRFToken`` header, showing the progress, then opens the dataset's page. Delete is
refused while a queued or running job uses the dataset (the API's 409, naming the jobs); the page
says so beside the button before it is pressed.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import Redirect, Response, Template

from api.auth import Principal
from api.deps import PathId
from api.services import DatasetService, JobService
from api.services.pages import PageRequest
from api.uploads import decoded_body, upload_coding
from domain.dataset_format import DEFAULT_MAX_ERRORS
from runtime.context import Runtime

__all__ = ["DatasetPages"]

PAGE_SIZE = 25


class DatasetPages(Controller):
    """``/console/datasets``: the list and upload, a dataset's page, delete."""

    path = "/datasets"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def list_page(
        self,
        caller: NamedDependency[Principal],
        datasets: NamedDependency[DatasetService],
        after: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> Template:
        """The signed-in user's datasets, newest first, and the upload form."""
        page = datasets.list(PageRequest(limit=PAGE_SIZE, after=after))
        context = {
            "title": "Datasets",
            "nav": "datasets",
            "caller": caller,
            "rows": page.datasets,
            "next": page.next,
            "max_upload_bytes": datasets.rt.settings.max_upload_bytes,
            "quota_left": datasets.quota_left(),
        }
        return Template("datasets.html", context=context)

    @post("/upload", request_max_body_size=None, status_code=201)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        datasets: NamedDependency[DatasetService],
        filename: Annotated[str | None, Parameter(max_length=255)] = None,
    ) -> Response[dict[str, Any]]:
        """``POST /datasets/{user_id}/upload`` for the page script: the same body, limit and quota;
        the reply names the dataset's page."""
        coding = upload_coding(request.headers)
        size = request.content_length if coding is None else None
        dataset = await datasets.upload(filename, decoded_body(request.stream(), coding), size)
        body = {
            "dataset_id": dataset.dataset_id,
            "status": dataset.status,
            "error_count": dataset.error_count,
            "page": f"/console/datasets/{dataset.dataset_id}",
        }
        return Response(body, status_code=201, headers={"Location": body["page"]})

    @get("/{dataset_id:str}", sync_to_thread=True)
    def dataset_page(
        self,
        dataset_id: PathId,
        caller: NamedDependency[Principal],
        datasets: NamedDependency[DatasetService],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        """The dataset's metadata, statistics and validation report, and its delete button."""
        dataset = datasets.get(dataset_id)
        in_use = JobService(runtime, caller.user_id).active_job_ids(dataset_id=dataset_id)
        context = {
            "title": f"Dataset {dataset.filename or dataset_id}",
            "nav": "datasets",
            "caller": caller,
            "dataset": dataset,
            "errors": dataset.errors,
            # the report keeps the first DEFAULT_MAX_ERRORS failing lines (the count is not stored)
            "more_errors": dataset.error_count is None and len(dataset.errors) >= DEFAULT_MAX_ERRORS,
            "stats": sorted((dataset.stats or {}).items()),
            "in_use": in_use,
        }
        return Template("dataset.html", context=context)

    @post("/{dataset_id:str}/delete", sync_to_thread=True, status_code=303)
    def delete(self, dataset_id: PathId, datasets: NamedDependency[DatasetService]) -> Redirect:
        """``DELETE /datasets/{dataset_id}``: refused (409, the page names the jobs) while in use."""
        datasets.delete(dataset_id)
        return Redirect("/console/datasets", status_code=303)
