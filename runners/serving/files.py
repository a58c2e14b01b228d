"""Local copies of what the engine loads: base models and adapters, fetched from the bucket once.

- A catalogue base model comes from the bucket's ``base-models/<name>/`` (put there by the first
  training run on it, so a user's first chat with a fine-tuned model never converts anything),
  else from the runners' base-model store ``<home>/base-models/<name>/`` (``resolve_base_model``
  builds or converts it there once and uploads it, as a runner would).
- An adapter (or a full model's weights) is copied from ``users/<uid>/models/<id>/weights/`` to
  ``<cache>/models/<uid>/<id>/<sha256>/``; a ``.complete`` file written last marks a whole copy,
  so a half copy left by a crash is fetched again.

Copies of the same thing are made once at a time (a lock per name); different ones in parallel.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from domain.base_models import BaseModelSource
from runners.base_models import MARKER
from runners.workdir import download_prefix, fetch_base_model
from runtime.serving import AdapterRef, ModelRef
from storage import Bucket

__all__ = ["ModelFiles"]

_COMPLETE = ".complete"
SourceOf = Callable[[str], BaseModelSource | None]


class ModelFiles:
    """Where the engine finds a model's files on this machine.

    Args:
        bucket: where the converted base models and the users' weights are.
        cache_dir: this engine's own copies (``<cache_dir>/base-models``, ``<cache_dir>/models``).
        base_store: the runners' base-model store (``<home>/base-models``), reused as it is.
        source_of: where an operator-added base model comes from (the platform's catalogue).
    """

    def __init__(
        self, bucket: Bucket, cache_dir: Path, *, base_store: Path, source_of: SourceOf | None = None
    ) -> None:
        self.bucket = bucket
        self.cache_dir = Path(cache_dir)
        self.base_store = Path(base_store)
        self.source_of = source_of or (lambda name: None)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def base(self, ref: ModelRef) -> Path:
        """The folder of a base model (config, tokenizer, weights), or of a full model's weights."""
        if ref.prefix is not None:
            return self._copy(ref.prefix, self.cache_dir / "models" / ref.key / "full")
        local = self.base_store / ref.base_model
        if (local / MARKER).is_file():
            return local
        dest = self.cache_dir / "base-models" / ref.base_model
        with self._lock(f"base:{ref.base_model}"):
            if (dest / MARKER).is_file():
                return dest
            staging = dest.with_name(f".{dest.name}.fetching")
            shutil.rmtree(staging, ignore_errors=True)
            fetch_base_model(
                self.bucket,
                ref.base_model,
                staging,
                cache_dir=self.base_store,
                source=self.source_of(ref.base_model),
            )
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        return dest

    def adapter(self, ref: AdapterRef) -> Path:
        """The folder of an adapter (``adapter_config.json`` and its weights)."""
        return self._copy(ref.prefix, self.cache_dir / "models" / ref.key / (ref.sha256 or "current"))

    def _copy(self, prefix: str, dest: Path) -> Path:
        if (dest / _COMPLETE).is_file():
            return dest
        with self._lock(str(dest)):
            if (dest / _COMPLETE).is_file():
                return dest
            shutil.rmtree(dest, ignore_errors=True)
            download_prefix(self.bucket, prefix, dest)
            (dest / _COMPLETE).touch()
        return dest
