"""Fetching a model's weights: stream the archive, verify size and sha256, unpack safely.

Used by ``model download``. Nothing is left behind at the destination unless the digest matched.
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

__all__ = ["VERIFIED_MARK", "download_archive", "extract_archive", "fetch_weights"]

VERIFIED_MARK = ".tune-sha256"


def _verify(got: Download, model_id: str) -> None:
    if got.expected_size is not None and got.size != got.expected_size:
        raise CliError(f"download of {model_id} was cut short: {got.size} of {got.expected_size} bytes")
    if got.expected_sha256 is None:
        raise CliError(f"the server sent no sha256 for {model_id}; refusing unverified weights")
    if got.sha256 != got.expected_sha256:
        raise CliError(f"sha256 mismatch for {model_id}: got {got.sha256}, server says {got.expected_sha256}")


def download_archive(client: ApiClient, model_id: str, dest: Path, *, progress: bool = True) -> str:
    """Stream ``/models/<id>/download`` into ``dest`` (verified); return its sha256."""
    from cli.output import transfer_progress

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with part.open("wb") as fh:
            if progress:
                with transfer_progress(f"download {model_id}", None) as bar:
                    got = client.download(
                        f"/models/{model_id}/download", fh, on_start=bar.set_total, on_progress=bar.advance
                    )
            else:
                got = client.download(f"/models/{model_id}/download", fh)
        _verify(got, model_id)
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


def fetch_weights(client: ApiClient, model_id: str, dest: Path, *, progress: bool = True) -> Path:
    """Download, verify and unpack a model's weights into ``dest``."""
    archive = dest.with_name(f".{dest.name}.tar")
    try:
        digest = download_archive(client, model_id, archive, progress=progress)
        return extract_archive(archive, dest, digest=digest)
    finally:
        archive.unlink(missing_ok=True)
