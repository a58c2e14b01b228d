"""The trainer process's default sink and stop switch; torch-free, so installed before heavy imports.

``JsonLinesSink`` writes ``runners.trainer.events`` as JSON lines (a ``ProgressSink`` and
``DetailSink``); ``StopSignal`` turns SIGTERM/SIGINT or a stop file into ``should_stop()``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from runners.trainer.events import Checkpoint, Eval, Started, Step, TrainerEvent, encode_event

__all__ = ["JsonLinesSink", "StopSignal"]


class StopSignal:
    """Becomes set on SIGTERM/SIGINT (once ``install``-ed) or when ``stop_file`` exists."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.stop_file = stop_file
        self._event = threading.Event()

    def install(self) -> StopSignal:
        """Handle SIGTERM and SIGINT by setting the flag (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self._event.set()
        return self._event.is_set()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._event.set()


class JsonLinesSink:
    """Writes ``step``/``eval``/``checkpoint`` events as JSON lines to ``stream`` (flushed each line)."""

    def __init__(self, stream: IO[bytes], stop: StopSignal | None = None) -> None:
        self.stream = stream
        self.stop = stop or StopSignal()
        self._lock = threading.Lock()

    def emit(self, event: TrainerEvent) -> None:
        """Write one event line."""
        with self._lock:
            self.stream.write(encode_event(event))
            self.stream.flush()

    def on_step(
        self,
        step: int,
        total_steps: int,
        epoch: float,
        loss: float,
        tokens: int,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        self.emit(
            Step(
                step=step,
                total_steps=total_steps,
                epoch=round(epoch, 4),
                loss=loss,
                tokens=tokens,
                metrics=dict(metrics or {}),
            )
        )

    def on_started(self, started: Started) -> None:
        self.emit(started)

    def on_eval(self, step: int, eval_loss: float) -> None:
        self.emit(Eval(step=step, eval_loss=eval_loss))

    def on_checkpoint(self, step: int, path: str) -> None:
        self.emit(Checkpoint(step=step, path=path))

    def should_stop(self) -> bool:
        return self.stop.is_set()
