"""Models: show, list, delete (refused while a job trains on it), download as a verified tar.

One digest everywhere: a model's ``sha256`` and ``size_bytes`` (``model show``, ``GET
/models/{id}``) are those of the tar ``GET /models/{id}/download`` sends (``X-Content-SHA256``),
which ``sha256sum`` of the saved file gives too; the digest of the weights' ``SHA256SUMS``
manifest recorded by the runner is ``weights_sha256``. The archive holds ``weights/`` (with a
loadable adapter config and a model card: ``api.model_card``) and ``config.json``; with
``with_base`` also the converted base model under ``base/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgspec

from api import schemas
from api.archive import TarPlan, plan_tar, tar_chunks, tar_sha256
from api.model_card import adapter_config, model_card, public_config, updated_manifest
from api.services.base import UserService
from api.services.jobs import JobService
from api.services.pages import EVERY, Listing, PageRequest, Pages
from domain.errors import Conflict
from runtime.context import Runtime
from storage import ObjectNotFound, layout

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

    def view(self, model_id: str) -> schemas.Model:
        """The model's view as stored (``sha256``: its weights' manifest)."""
        return self.object_view(layout.model_metadata, "model", model_id, schemas.Model)

    def get(self, model_id: str) -> schemas.Model:
        """The model, its ``sha256`` and ``size_bytes`` those of its download (module docstring)."""
        model = self.view(model_id)
        if model.status != "ready":
            return model
        archive = self.archive(model_id, model=model)
        return msgspec.structs.replace(
            model, sha256=archive.sha256, size_bytes=archive.size, weights_sha256=model.sha256
        )

    def list(self, request: PageRequest = EVERY, base_model: str | None = None) -> schemas.ModelList:
        """A page of the caller's models (``api.services.pages``), or all of them without paging."""
        pages = Pages(self.rt, self.user_id, MODELS)
        return pages.reply(request, base_model=base_model)  # type: ignore[no-any-return]

    def delete(self, model_id: str) -> schemas.Deleted:
        """Record the deletion (409 while a queued or running job builds on it), then remove its files."""
        self.view(model_id)
        active = JobService(self.rt, self.user_id).active_job_ids(base_model=model_id)
        self.app.delete_model(model_id, active_job_ids=active, at=self.rt.clock())
        self.committed()
        for name in list(self.rt.bucket.list(layout.model_prefix(self.user_id, model_id))):
            if name != layout.model_metadata(self.user_id, model_id):
                self.rt.bucket.delete(name)
        return schemas.Deleted(id=model_id)

    def archive(
        self, model_id: str, *, with_base: bool = False, model: schemas.Model | None = None
    ) -> Archive:
        """The model's folder (weights, config; not the metadata view) as a deterministic tar."""
        model = model or self.view(model_id)
        prefix = layout.model_prefix(self.user_id, model_id)
        also: tuple[tuple[str, str], ...] = ()
        exclude = {layout.model_metadata(self.user_id, model_id)}
        if with_base:
            if not self.rt.bucket.exists(layout.base_model_marker(model.base_model)):
                raise Conflict(
                    f"the base model {model.base_model} is not converted yet (a job on it converts it)",
                    where="with_base",
                )
            also = ((layout.base_model_prefix(model.base_model), "base/"),)
            exclude.add(layout.base_model_marker(model.base_model))
        plan = plan_tar(
            self.rt.bucket,
            prefix,
            exclude=frozenset(exclude),
            also=also,
            inline=self._rewritten(model, with_base),
        )
        name = f"{model_id}-with-base.tar" if with_base else f"{model_id}.tar"
        return Archive(self.rt, plan, name)

    def _read(self, name: str) -> bytes | None:
        try:
            return self.rt.bucket.read(name)
        except ObjectNotFound:
            return None

    def _rewritten(self, model: schemas.Model, with_base: bool) -> dict[str, bytes]:
        """The files the download writes anew: adapter config, model card, manifest, config.json."""
        prefix = layout.model_prefix(self.user_id, model.model_id)
        weights = model.weights_prefix if model.weights_prefix.startswith(prefix) else prefix + "weights/"
        folder = weights[len(prefix) :]
        hub_id = self._hub_id(model)
        config_raw = self._read(layout.model_config(self.user_id, model.model_id))
        replaced: dict[str, bytes] = {"README.md": self._card(model, config_raw, with_base)}
        raw_adapter = self._read(weights + "adapter_config.json")
        if raw_adapter is not None:
            replaced["adapter_config.json"] = adapter_config(
                raw_adapter, "base" if with_base else hub_id or model.base_model
            )
        inline = {folder + name: data for name, data in replaced.items()}
        manifest = self._read(weights + "SHA256SUMS")
        if manifest is not None:
            inline[folder + "SHA256SUMS"] = updated_manifest(manifest, replaced)
        public = public_config(config_raw) if config_raw else None
        if public is not None:
            inline["config.json"] = public
        return inline

    def card(self, model: schemas.Model) -> str:
        """The model card (``README.md``) ``model``'s download carries, as text (the console shows it)."""
        config_raw = self._read(layout.model_config(self.user_id, model.model_id))
        return self._card(model, config_raw, with_base=False).decode()

    def _hub_id(self, model: schemas.Model) -> str | None:
        source = self.rt.base_model_sources().get(model.base_model)
        return source.source if source is not None and source.kind == "hub" else None

    def _card(self, model: schemas.Model, config_raw: bytes | None, with_base: bool) -> bytes:
        config = json.loads(config_raw) if config_raw else {}
        job = self.rt.view_json(layout.job_status(self.user_id, model.job_id)) if model.job_id else None
        return model_card(
            model_id=model.model_id,
            base_model=model.base_model,
            hub_id=self._hub_id(model),
            kind=model.kind,
            dataset_id=(job or {}).get("dataset_id"),
            training_config=config.get("training_config"),
            metrics=model.metrics,
            with_base=with_base,
        )
