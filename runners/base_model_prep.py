"""Base models are converted once per platform, when they enter the catalogue, not at a user's first use.

The serving role (``roles.embedded``: ``tune serve``) runs a ``BaseModelPreparer`` on a thread of
its own: at start-up, and every ``poll_s`` after (a model an operator adds with ``tune admin
base-model add`` from another process shows up in the catalogue view within the projector's sweep),
each catalogue model it is asked to prepare that the bucket does not hold yet is resolved into the
runners' base-model store (``<home>/base-models/<name>/``: built, converted from its GGUF, copied
from a local folder or the hub) and uploaded to the bucket's ``base-models/<name>/``, marker last
(``runners.workdir.publish_base_model``). A user's first job then copies it in
(``fetch_base_model``), and the chat engine loads it (``runners.serving.ModelFiles``), with no
conversion.

The conversion runs in a child process (``python -m runners.base_model_prep``, at a lower CPU
priority): the API keeps answering while it lasts (a GGUF's de-quantisation holds the GIL for long
stretches), and its memory goes back when it ends. A job or a chat that needs the model while it is
being converted waits for it (the store's file lock) instead of converting it again.

Which models are prepared (``Settings.prepare_base_models``, ``TUNE_PREPARE_BASE_MODELS``): source
kinds and/or names; the default is ``builtin`` and ``local`` (conversions, and folders only this
machine can read). Hub models are downloads of gigabytes, some gated: the first job on one
downloads it, unless the operator names it (or ``hub``) there. A model that cannot be prepared is
logged and left to its first job, as before (a transient failure is retried after a restart).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from domain.base_models import BaseModelSource
from runners.base_models import resolve_base_model
from runners.workdir import publish_base_model
from storage import Bucket, layout

__all__ = ["DEFAULT_SELECTION", "PREPARE_POLL_S", "BaseModelPreparer", "is_selected"]

log = logging.getLogger(__name__)

DEFAULT_SELECTION = ("builtin", "local")
"""What is prepared unless ``TUNE_PREPARE_BASE_MODELS`` says otherwise: source kinds or names."""
PREPARE_POLL_S = 30.0
"""How often the catalogue is looked at again for models added since (the projector sweeps as often)."""
_NICE = 10
_TAIL = 2000


def is_selected(source: BaseModelSource, selection: Collection[str]) -> bool:
    """Whether ``source`` is to be prepared: its name or its kind is in ``selection`` (or ``all`` is)."""
    return "all" in selection or source.name in selection or source.kind in selection


class BaseModelPreparer:
    """Puts the catalogue's base models in the bucket once, on a thread (``start``/``close``).

    Args:
        bucket: where ``base-models/<name>/`` go.
        cache_dir: the runners' base-model store on this machine (``<home>/base-models``).
        sources: the catalogue now (``Runtime.base_model_sources``).
        selection: source kinds and names to prepare (``is_selected``); empty: none.
        poll_s: seconds between two looks at the catalogue.
    """

    def __init__(
        self,
        bucket: Bucket,
        cache_dir: Path,
        sources: Callable[[], Mapping[str, BaseModelSource]],
        *,
        selection: Collection[str] = DEFAULT_SELECTION,
        poll_s: float = PREPARE_POLL_S,
    ) -> None:
        self.bucket = bucket
        self.cache_dir = Path(cache_dir)
        self.sources = sources
        self.selection = frozenset(selection)
        self.poll_s = poll_s
        self._failed: dict[str, BaseModelSource] = {}  # not tried again while the source is the same
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Prepare in the background (returns at once); nothing to do when the selection is empty."""
        if self.selection and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="base-models", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop looking; a conversion under way is ended (its half folder is never used)."""
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def prepare_pending(self) -> list[str]:
        """Prepare each selected catalogue model missing from the bucket, one after the other;
        the names uploaded now."""
        done = []
        for name, source in list(self.sources().items()):
            if self._stop.is_set():
                break
            if not is_selected(source, self.selection) or self._failed.get(name) == source:
                continue
            if self.bucket.exists(layout.base_model_marker(name)):
                continue
            try:
                self._convert(source)
                if publish_base_model(self.bucket, name, cache_dir=self.cache_dir, source=source):
                    done.append(name)
                    log.info("base model %s is in the bucket (base-models/%s/)", name, name)
            except Exception:  # a thread's boundary: logged; the model's first job tries again
                if self._stop.is_set():
                    break
                log.exception("base model %s could not be prepared; its first job will convert it", name)
                self._failed[name] = source
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self.prepare_pending()
            self._stop.wait(self.poll_s)

    def _convert(self, source: BaseModelSource) -> None:
        """Resolve ``source`` into the store in a child process (a no-op there when it is whole)."""
        log.info(
            "preparing base model %s (%s %s), once for the platform", source.name, source.kind, source.source
        )
        argv = [sys.executable, "-m", "runners.base_model_prep", "--name", source.name, "--kind", source.kind]
        argv += ["--source", source.source, "--cache-dir", str(self.cache_dir)]
        self._child = child = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        try:
            _, err = child.communicate()
        finally:
            self._child = None
        if child.returncode != 0:
            raise RuntimeError(
                f"converting {source.name} failed ({child.returncode}): {err[-_TAIL:].strip()}"
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m runners.base_model_prep``: resolve one base model into a store (the preparer's child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", required=True, choices=("builtin", "local", "hub"))
    parser.add_argument("--source", required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(_NICE)  # the API and the training runs come first
    resolve_base_model(args.name, args.cache_dir, source=BaseModelSource(args.name, args.kind, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
