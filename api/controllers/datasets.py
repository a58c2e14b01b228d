"""``/datasets``: streamed upload with validation, list, show and delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from api.deps import PathId
from api.errors import documented
from api.guards import requires_owner, requires_self
from api.schemas import Dataset, DatasetList, Deleted
from api.services import DatasetService
from api.services.pages import PageRequest
from api.uploads import UploadOperation, decoded_body, upload_coding
from runtime.context import Runtime

_WHEN = "refused before reading when Content-Length says so, else as soon as the streamed body passes it"
_UPLOAD_REFUSALS = {
    403: f"``quota_exceeded``: the user's datasets would pass their storage quota ({_WHEN}); nothing stored",
    413: f"``too_large``: the body is larger than the upload limit ({_WHEN}); nothing stored",
}


class DatasetController(Controller):
    path = "/datasets"
    tags = ["datasets"]

    @post(
        "/{user_id:str}/upload",
        operation_id="upload_dataset",
        responses=documented(404, 415, meanings=_UPLOAD_REFUSALS),
        guards=[requires_self],
        operation_class=UploadOperation,
        request_max_body_size=None,  # the service enforces the upload limit (413) and the quota (403)
    )
    async def upload(
        self,
        user_id: PathId,
        request: Request[Any, Any, Any],
        datasets: NamedDependency[DatasetService],
        filename: Annotated[
            str | None,
            QueryParameter(
                max_length=255,
                description="the file's name: a plain name (no path separator, control or invisible "
                "character, surrounding space; 400 naming ``filename`` otherwise)",
            ),
        ] = None,
    ) -> Response[Dataset]:
        """Stream a JSONL file as the request body (``Content-Encoding: gzip`` if compressed); it is
        validated line by line.

        201 with the dataset either ``validated`` (rows, format, statistics) or
        ``rejected`` (errors, each naming its line). A rejected upload keeps only its report:
        its bytes are deleted and do not count against the storage quota. 403 ``quota_exceeded``
        past the storage quota (validated datasets count), 413 ``too_large`` past the upload limit,
        both counted on the decompressed bytes while streaming, with or without a Content-Length;
        neither stores anything. 415 for a form, another media type or coding.
        """
        coding = upload_coding(request.headers)
        size = request.content_length if coding is None else None  # the limit counts decompressed bytes
        dataset = await datasets.upload(filename, decoded_body(request.stream(), coding), size)
        return Response(dataset, status_code=201)

    @get(
        "/{user_id:str}/list",
        operation_id="list_datasets",
        responses=documented(404),
        guards=[requires_owner],
    )
    async def list_datasets(
        self,
        user_id: PathId,
        datasets: NamedDependency[DatasetService],
        runtime: NamedDependency[Runtime],
        page: NamedDependency[PageRequest],
        status: Annotated[
            Literal["uploaded", "validated", "rejected"] | None,
            QueryParameter(name="state", description="keep only datasets in this state"),
        ] = None,
    ) -> DatasetList:
        """The user's datasets: a page, newest first, with ``limit`` / ``after``; all of them, oldest
        first, without. ``state`` and ``created_from`` / ``created_to`` filter."""
        return await runtime.io(datasets.list, page, status)

    @get("/{dataset_id:str}", operation_id="get_dataset", responses=documented(404))
    async def get_dataset(
        self, dataset_id: PathId, datasets: NamedDependency[DatasetService], runtime: NamedDependency[Runtime]
    ) -> Dataset:
        """A dataset's metadata and validation report."""
        return await runtime.io(datasets.get, dataset_id)

    @delete(
        "/{dataset_id:str}",
        operation_id="delete_dataset",
        responses=documented(404, 409),
        status_code=200,
        sync_to_thread=True,
    )
    def delete_dataset(self, dataset_id: PathId, datasets: NamedDependency[DatasetService]) -> Deleted:
        """Delete the dataset and its files; 409 while a queued or running job uses it."""
        return datasets.delete(dataset_id)
