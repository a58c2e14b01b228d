"""Fetching a model's weights: stream the archive, verify size and sha256, unpack safely.

Used by ``model download``: the digest checked is the server's ``X-Content-SHA256`` and, for
the plain download, also the ``sha256`` that ``model show`` reports (one digest: the tar's).
``merge_weights`` (``--merged``) fetches the adapter with its base and merges them with peft
here, into safetensors that load with plain transformers. Nothing is left behind at the
destination unless the digest matched.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import ApiClient, Download

__all__ = ["VERIFIED_MARK", "download_archive", "extract_archive", "fetch_weights", "merge_weights"]

VERIFIED_MARK = ".tune-sha256"


def _verify(got: Download, model_id: str, expected_sha256: str | None = None) -> None:
    if got.expected_size is not None and got.size != got.expected_size:
        raise CliError(f"download of {model_id} was cut short: {got.size} of {got.expected_size} bytes")
    if got.expected_sha256 is None:
        raise CliError(f"the server sent no sha256 for {model_id}; refusing unverified weights")
    if got.sha256 != got.expected_sha256:
        raise CliError(f"sha256 mismatch for {model_id}: got {got.sha256}, server says {got.expected_sha256}")
    if expected_sha256 is not None and got.sha256 != expected_sha256:
        raise CliError(
            f"sha256 mismatch for {model_id}: got {got.sha256}, `model show` says {expected_sha256}"
        )


def download_archive(
    client: ApiClient,
    model_id: str,
    dest: Path,
    *,
    progress: bool = True,
    with_base: bool = False,
    expected_sha256: str | None = None,
) -> str:
    """Stream ``/models/<id>/download`` into ``dest`` (verified); return its sha256."""
    path = f"/models/{model_id}/download" + ("?with_base=true" if with_base else "")
    from cli.output import transfer_progress

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with part.open("wb") as fh:
            if progress:
                with transfer_progress(f"download {model_id}", None) as bar:
                    got = client.download(path, fh, on_start=bar.set_total, on_progress=bar.advance)
            else:
                got = client.download(path, fh)
        _verify(got, model_id, expected_sha256)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return got.sha256


def extract_archive(archive: Path, dest: Path, *, digest: str) -> Path:
    """Unpack ``archive`` into a fresh ``dest`` (no paths outside it), marking the digest."""
    if dest.exists() and any(dest.iterdir()):
        raise CliError(f"{dest} already exists and is not empty", where="--output")
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.unpack")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(staging, filter="data")
        (staging / VERIFIED_MARK).write_text(digest + "\n", encoding="ascii")
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    except tarfile.TarError as exc:
        raise CliError(f"the model archive is not a valid tar file: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch_weights(
    client: ApiClient,
    model_id: str,
    dest: Path,
    *,
    progress: bool = True,
    with_base: bool = False,
    expected_sha256: str | None = None,
) -> Path:
    """Download, verify and unpack a model's weights into ``dest``."""
    archive = dest.with_name(f".{dest.name}.tar")
    try:
        digest = download_archive(
            client, model_id, archive, progress=progress, with_base=with_base, expected_sha256=expected_sha256
        )
        return extract_archive(archive, dest, digest=digest)
    finally:
        archive.unlink(missing_ok=True)


def merge_weights(client: ApiClient, model_id: str, dest: Path, *, progress: bool = True) -> Path:
    """The adapter merged into its base (downloaded with it), saved to ``dest`` as safetensors.

    ``dest`` gets the merged model's config, ``model.safetensors``, the tokenizer, the model card
    and a ``SHA256SUMS`` of its files; a full model is saved as it came.
    """
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = dest.with_name(f".{dest.name}.{os.getpid()}.merge")
    shutil.rmtree(staging, ignore_errors=True)
    out = dest.with_name(f".{dest.name}.{os.getpid()}.merged")
    shutil.rmtree(out, ignore_errors=True)
    try:
        fetch_weights(client, model_id, staging, progress=progress, with_base=True)
        weights, base = staging / "weights", staging / "base"
        if (weights / "adapter_config.json").is_file():
            from peft import PeftModel

            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            model = PeftModel.from_pretrained(model, weights).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(
            weights if (weights / "tokenizer_config.json").is_file() else base
        )
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        if (weights / "README.md").is_file():
            shutil.copyfile(weights / "README.md", out / "README.md")
        sums = "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}\n"
            for p in sorted(out.rglob("*"))
            if p.is_file()
        )
        (out / "SHA256SUMS").write_text(sums)
        if dest.exists():
            dest.rmdir()
        os.replace(out, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return dest
