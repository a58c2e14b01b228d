"""Models: show, list, delete (refused while a job trains on it), download as a verified tar."""

from __future__ import annotations

from collections.abc import Iterator

from api import schemas
from api.archive import TarPlan, plan_tar, tar_chunks, tar_sha256
from api.services.base import UserService
from api.services.jobs import JobService
from api.services.pages import EVERY, Listing, PageRequest, Pages
from runtime.context import Runtime
from storage import layout

__all__ = ["Archive", "ModelService"]


class Archive:
    """A model folder as a tar stream whose size and sha256 are known up front."""

    def __init__(self, runtime: Runtime, plan: TarPlan, filename: str) -> None:
        self.rt = runtime
        self.plan = plan
        self.filename = filename
        self.size = plan.size
        self.sha256 = tar_sha256(runtime.bucket, plan)

    def chunks(self) -> Iterator[bytes]:
        return tar_chunks(self.rt.bucket, self.plan)


MODELS = Listing("models", schemas.ModelRow, "model_id", layout.models, schemas.ModelList, "models")


class ModelService(UserService):
    """The caller's fine-tuned models."""

    def get(self, model_id: str) -> schemas.Model:
        return self.object_view(layout.model_metadata, "model", model_id, schemas.Model)

    def list(self, request: PageRequest = EVERY, base_model: str | None = None) -> schemas.ModelList:
        """A page of the caller's models (``api.services.pages``), or all of them without paging."""
        pages = Pages(self.rt, self.user_id, MODELS)
        return pages.reply(request, base_model=base_model)  # type: ignore[no-any-return]

    def delete(self, model_id: str) -> schemas.Deleted:
        """Record the deletion (409 while a queued or running job builds on it), then remove its files."""
        self.get(model_id)
        active = JobService(self.rt, self.user_id).active_job_ids(base_model=model_id)
        self.app.delete_model(model_id, active_job_ids=active, at=self.rt.clock())
        self.committed()
        for name in list(self.rt.bucket.list(layout.model_prefix(self.user_id, model_id))):
            if name != layout.model_metadata(self.user_id, model_id):
                self.rt.bucket.delete(name)
        return schemas.Deleted(id=model_id)

    def archive(self, model_id: str) -> Archive:
        """The model's folder (weights, config; not the metadata view) as a deterministic tar."""
        self.get(model_id)
        plan = plan_tar(
            self.rt.bucket,
            layout.model_prefix(self.user_id, model_id),
            exclude=frozenset({layout.model_metadata(self.user_id, model_id)}),
        )
        return Archive(self.rt, plan, f"{model_id}.tar")
