"""The working folder of one attempt, and the copies between it and the bucket.

Layout of a ``WorkDir``::

    <root>/base/               the base model (config, tokenizer, weights), copied in
    <root>/data/train.jsonl    the processed dataset, copied in
    <root>/data/validation.jsonl   the processed validation dataset (``config.validation_dataset_id``),
                               copied in
    <root>/resume/<step>/      the checkpoint this attempt continues from, copied in
    <root>/start/              the weights a job's first attempts start from (a checkpoint or a model
                               of the user's, less its trainer state), copied in
    <root>/out/                the trainer's output: checkpoints/checkpoint-<step>/, model/
    <root>/run.yaml            the trainer's run spec (local paths)
    <root>/STOP                appears when the trainer must checkpoint and stop
    <root>/job.log, metrics.jsonl   local copies of the attempt's log objects

Base models come from the bucket's ``base-models/<name>/`` when a runner has put them there
(the marker object is written last, so its presence means the folder is whole); otherwise
they are built or converted into the local cache (``resolve_base_model``) and uploaded, so
the next runner anywhere copies them in.

A finished model's weights go to ``models/<id>/weights/`` with a ``SHA256SUMS`` manifest
(``sha256sum -c`` format, sorted by path); the model's ``sha256`` is that manifest's digest.
``models/<id>/config.json`` says how it was made. (``metadata.json`` beside them is a
projection of the model's events, written by the projector.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from domain.model import ModelWeights
from domain.training_config import training_config_to_dict
from runners.attempt_spec import JobRunSpec
from runners.base_models import MARKER, BaseModelSource, resolve_base_model
from storage import Bucket, ObjectNotFound, layout

__all__ = [
    "MANIFEST",
    "WorkDir",
    "download_object",
    "download_prefix",
    "fetch_base_model",
    "file_sha256",
    "model_from_checkpoint",
    "prune_checkpoints",
    "prune_job_checkpoints",
    "publish_base_model",
    "publish_model",
    "upload_folder",
    "weights_manifest",
]

MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20
TRAINER_STATE = re.compile(
    r"(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin)"
)
"""The files of a checkpoint only resuming needs (transformers' Trainer writes them beside the weights)."""


class WorkDir:
    """Paths inside one attempt's working folder (created on first use; see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base = self.root / "base"
        self.dataset = self.root / "data" / "train.jsonl"
        self.validation = self.root / "data" / "validation.jsonl"
        self.out = self.root / "out"
        self.start = self.root / "start"
        self.trainer_run = self.root / "run.yaml"
        self.stop_file = self.root / "STOP"
        self.log = self.root / "job.log"
        self.metrics = self.root / "metrics.jsonl"

    def resume(self, step: int) -> Path:
        return self.root / "resume" / str(step)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def download_object(bucket: Bucket, name: str, dest: Path) -> Path:
    """Copy object ``name`` to the file ``dest`` (ObjectNotFound if it does not exist)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with bucket.open_read(name) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    return dest


def download_prefix(bucket: Bucket, prefix: str, dest: Path) -> int:
    """Copy every object under ``prefix`` to the same relative path under ``dest``; return how many."""
    if not prefix.endswith("/"):
        raise ValueError(f"a folder prefix ends with '/': {prefix!r}")
    count = 0
    for name in bucket.list(prefix):
        download_object(bucket, name, dest / name[len(prefix) :])
        count += 1
    return count


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every regular file under ``folder``, sorted by path."""
    found = (
        (p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
    )
    yield from sorted(found)


def upload_folder(
    bucket: Bucket, folder: Path, prefix: str, *, last: str | None = None, clear: bool = False
) -> int:
    """Upload every file under ``folder`` to ``prefix`` + its relative path; return the bytes sent.

    ``last`` (a relative path) is uploaded after all the others, so its presence marks a whole
    folder; ``clear`` first deletes whatever lay under ``prefix`` (a half upload of an earlier try).
    """
    if clear:
        bucket.delete_prefix(prefix)
    files = list(_files(folder))
    files.sort(key=lambda item: item[0] == last)
    sent = 0
    for relative, path in files:
        with open(path, "rb") as fh:
            sent += bucket.upload(prefix + relative, fh).size
    return sent


def prune_checkpoints(bucket: Bucket, prefix: str, keep: int) -> list[int]:
    """Delete all but the ``keep`` latest checkpoints ``<prefix><step>/``; return the steps deleted."""
    if keep < 1:
        raise ValueError("keep at least one checkpoint")
    steps = sorted(
        {int(s) for s in (n[len(prefix) :].split("/", 1)[0] for n in bucket.list(prefix)) if s.isdigit()}
    )
    old = steps[:-keep]
    for step in old:
        bucket.delete_prefix(f"{prefix}{step}/")
    return old


def prune_job_checkpoints(bucket: Bucket, user_id: str, job_id: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` latest checkpoints of a job, across its attempts; return the folders
    deleted.

    Latest by ``(attempt, step)``: a later attempt resumed from the job's last checkpoint, so its
    checkpoints come after every earlier attempt's (even an orphaned runner's that went on past
    that point). A job run before attempts had prefixes has its ``checkpoints/<step>/`` as attempt 0.
    """
    if keep < 1:
        raise ValueError("keep at least one checkpoint")
    job = layout.job_prefix(user_id, job_id)
    found: dict[tuple[int, int], str] = {}
    for prefix in (layout.attempts_prefix(user_id, job_id), layout.checkpoints_prefix(user_id, job_id)):
        for name in bucket.list(prefix):
            parts = name[len(job) :].split("/")
            folder = "/".join(parts[:4] if parts[0] == "attempts" else parts[:2]) + "/"
            point = layout.attempt_of_checkpoint(user_id, job_id, job + folder)
            if point is not None:
                found[point] = job + folder
    old = [found[point] for point in sorted(found)[:-keep]]
    for folder in old:
        bucket.delete_prefix(folder)
    return old


def model_from_checkpoint(bucket: Bucket, prefix: str, dest: Path, *, base_model_ref: str) -> Path:
    """Copy the weights and tokenizer of checkpoint ``prefix`` (not its optimizer, scheduler, RNG and
    trainer state) to ``dest``, as the final model folder of a job would hold them: an adapter names
    ``base_model_ref`` as its base (the checkpoint names the folder it was trained from).
    ObjectNotFound when the checkpoint holds no weights."""
    if not prefix.endswith("/"):
        prefix += "/"
    shutil.rmtree(dest, ignore_errors=True)
    for name in bucket.list(prefix):
        relative = name[len(prefix) :]
        if not TRAINER_STATE.fullmatch(relative):
            download_object(bucket, name, dest / relative)
    adapter = dest / "adapter_config.json"
    if adapter.is_file():
        config = json.loads(adapter.read_text())
        config["base_model_name_or_path"] = base_model_ref
        adapter.write_text(json.dumps(config, indent=2, sort_keys=True))
    elif not (dest / "config.json").is_file():
        raise ObjectNotFound(f"checkpoint {prefix} holds no adapter or model weights")
    return dest


def fetch_base_model(
    bucket: Bucket,
    name: str,
    dest: Path,
    *,
    cache_dir: Path,
    source: BaseModelSource | None = None,
    converting: Callable[[str], AbstractContextManager[object]] = lambda name: contextlib.nullcontext(),
) -> Path:
    """Put base model ``name`` at ``dest``: from ``base-models/<name>/``, else resolved and uploaded there.

    The first use of a model (not in the bucket yet) converts it, which takes a minute or more:
    that part runs inside ``converting(name)``, so the caller can say so while it lasts.
    """
    if not bucket.exists(layout.base_model_marker(name)):
        with converting(name):
            publish_base_model(bucket, name, cache_dir=cache_dir, source=source)
    download_prefix(bucket, layout.base_model_prefix(name), dest)
    return dest


def publish_base_model(
    bucket: Bucket, name: str, *, cache_dir: Path, source: BaseModelSource | None = None
) -> bool:
    """Make sure ``base-models/<name>/`` is whole in the bucket: resolved (built, converted or copied)
    into ``cache_dir`` and uploaded, marker last, unless it is there already. True if it uploaded.

    The serving role does this for the catalogue when it starts (``runners.base_model_prep``), so
    a user's first job or chat finds the model converted; a runner does it for a model still missing.
    """
    marker = layout.base_model_marker(name)
    if bucket.exists(marker):
        return False
    local = resolve_base_model(name, cache_dir, source=source)  # waits for a conversion under way here
    if bucket.exists(marker):  # uploaded by whoever converted it while we waited
        return False
    upload_folder(bucket, local, layout.base_model_prefix(name), last=MARKER)
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def weights_manifest(folder: Path) -> tuple[bytes, int]:
    """``SHA256SUMS`` of every file under ``folder`` (but itself) and the files' total size."""
    lines, size = [], 0
    for relative, path in _files(folder):
        if relative == MANIFEST:
            continue
        lines.append(f"{file_sha256(path)}  {relative}\n")
        size += path.stat().st_size
    return "".join(lines).encode(), size


def publish_model(
    bucket: Bucket,
    spec: JobRunSpec,
    model_dir: Path,
    metrics: dict[str, float],
    *,
    extra: dict[str, Any] | None = None,
) -> ModelWeights:
    """Upload the trained weights with their manifest and the model's config.json; return what to register."""
    manifest, size = weights_manifest(model_dir)
    (model_dir / MANIFEST).write_bytes(manifest)
    upload_folder(bucket, model_dir, spec.weights_prefix, last=MANIFEST, clear=True)
    sha256 = hashlib.sha256(manifest).hexdigest()
    config = {
        "model_id": spec.model_id,
        "job_id": spec.job_id,
        "base_model": spec.base_model,
        "kind": spec.model_kind,
        "weights": spec.weights_prefix,
        "sha256": sha256,
        "size_bytes": size,
        "gpu_type": spec.gpu_type,
        "gpu_count": spec.gpu_count,
        "attempt": spec.attempt,
        "training_config": training_config_to_dict(spec.config),
        "metrics": metrics,
        **(extra or {}),
    }
    bucket.write(spec.model_config_object, json.dumps(config, indent=2, sort_keys=True).encode())
    return ModelWeights(
        kind=spec.model_kind,
        weights_prefix=spec.weights_prefix,
        sha256=sha256,
        size_bytes=size,
        metrics=metrics,
    )
