"""``/models``: list, show, download (a verified tar; HEAD: its headers alone) and delete models."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Controller, Response, delete, get, head
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Stream

from api.deps import BaseModelFilter, PathId
from api.errors import documented
from api.guards import requires_owner
from api.schemas import Deleted, Model, ModelList
from api.services import ModelService
from api.services.models import Archive
from api.services.pages import PageRequest
from api.streams import NO_COMPRESSION
from runtime.context import Runtime

TAR = "application/x-tar"
WithBase = Annotated[
    bool,
    QueryParameter(
        name="with_base",
        description="Include the base model (folder `base/`); 409 until a job has converted it.",
    ),
]


def _download_headers(archive: Archive) -> dict[str, str]:
    return {
        "Content-Length": str(archive.size),
        "X-Content-Size": str(archive.size),
        "X-Content-SHA256": archive.sha256,
        "Content-Disposition": f'attachment; filename="{archive.filename}"',
    }


class ModelController(Controller):
    path = "/models"
    tags = ["models"]

    @get(
        "/{user_id:str}/list",
        operation_id="list_models",
        responses=documented(404),
        guards=[requires_owner],
    )
    async def list_models(
        self,
        user_id: PathId,
        models: NamedDependency[ModelService],
        runtime: NamedDependency[Runtime],
        page: NamedDependency[PageRequest],
        base_model: BaseModelFilter = None,
    ) -> ModelList:
        """The user's fine-tuned models: a page, newest first, with ``limit`` / ``after``; all of them,
        oldest first, without. ``base_model`` and ``created_from`` / ``created_to`` filter."""
        return await runtime.io(models.list, page, base_model)

    @get("/{model_id:str}", operation_id="get_model", responses=documented(404))
    async def get_model(
        self, model_id: PathId, models: NamedDependency[ModelService], runtime: NamedDependency[Runtime]
    ) -> Model:
        """A model's metadata: base model, kind, size, digest, training metrics."""
        return await anyio.to_thread.run_sync(models.get, model_id)

    @get(
        "/{model_id:str}/download",
        operation_id="download_model",
        opt={NO_COMPRESSION: True},
        responses=documented(404, 409),
        media_type=TAR,
    )
    async def download(
        self, model_id: PathId, models: NamedDependency[ModelService], with_base: WithBase = False
    ) -> Stream:
        """The model's folder as a tar; ``X-Content-Size`` and ``X-Content-SHA256`` let a client verify it
        (without ``with_base`` they are the model's ``sha256`` and ``size_bytes``)."""
        archive = await anyio.to_thread.run_sync(lambda: models.archive(model_id, with_base=with_base))
        return Stream(archive.chunks(), media_type=TAR, headers=_download_headers(archive))

    @head(
        "/{model_id:str}/download",
        operation_id="download_model_head",
        opt={NO_COMPRESSION: True},
        responses=documented(404, 409),
        media_type=TAR,
    )
    async def download_head(
        self, model_id: PathId, models: NamedDependency[ModelService], with_base: WithBase = False
    ) -> Response[None]:
        """The download's headers (size, sha256, file name) without its body."""
        archive = await anyio.to_thread.run_sync(lambda: models.archive(model_id, with_base=with_base))
        return Response(b"", media_type=TAR, headers={"Content-Type": TAR, **_download_headers(archive)})

    @delete(
        "/{model_id:str}",
        operation_id="delete_model",
        responses=documented(404, 409),
        status_code=200,
        sync_to_thread=True,
    )
    def delete_model(self, model_id: PathId, models: NamedDependency[ModelService]) -> Deleted:
        """Delete the model and its weights; 409 while a queued or running job builds on it."""
        return models.delete(model_id)
