"""How training reports progress and learns it must stop.

``ProgressSink`` is the seam: the recipe calls it, and never writes the event store itself.
``ProgressCallback`` adapts it to transformers' ``TrainerCallback``. The default sink of
``python -m runners.trainer`` is ``runners.trainer.sinks.JsonLinesSink`` (JSON lines on stdout),
stopped by a ``runners.trainer.sinks.StopSignal`` (SIGTERM/SIGINT or a stop file).
``MetricsFileCallback`` writes the same points as TensorBoard event files (shipped with the model).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy

from runners.trainer.events import Started

__all__ = ["DetailSink", "MetricsFileCallback", "ProgressCallback", "ProgressSink", "checkpoint_dir"]


class ProgressSink(Protocol):
    """Where the trainer reports; implemented by the stdout sink, tests and benches."""

    def on_step(self, step: int, total_steps: int, epoch: float, loss: float, tokens: int) -> None:
        """An optimizer step finished; ``tokens``: non-padding input tokens since step 0.

        A recipe that reports more per step (DPO's rewards and margins) also passes
        ``metrics={name: value}``; only its sinks need to accept that keyword.
        """

    def on_checkpoint(self, step: int, path: str) -> None:
        """A resumable checkpoint now exists at ``path``."""

    def should_stop(self) -> bool:
        """True once training should checkpoint and stop (asked after every optimizer step)."""


@runtime_checkable
class DetailSink(Protocol):
    """Optional extras for sinks that also want the start summary and validation losses."""

    def on_started(self, started: Started) -> None: ...

    def on_eval(self, step: int, eval_loss: float) -> None: ...


def checkpoint_dir(output_dir: str, step: int) -> str:
    """Where transformers writes the checkpoint of ``step`` under ``output_dir``."""
    return os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")


class ProgressCallback(TrainerCallback):
    """Forwards steps, evaluations and checkpoints to a sink; asks it whether to stop after each step.

    Needs ``logging_steps=1`` to report every step. On a stop it makes the Trainer save a
    checkpoint at that step and end training; ``stopped_at`` then holds the step (a stop
    asked at the last step is ignored: the run is complete and saves its weights). The
    Trainer's own save at the last step is skipped unless it falls on ``save_steps``: the
    recipe saves the final weights itself. With a validation set the last step is always
    evaluated (whether or not it falls on ``eval_steps``), and saved too when the best
    checkpoint is loaded at the end (``load_best_model_at_end``: the last step may be the best).

    Args:
        sink: where to report.
        describe: extra ``Started`` fields (example counts, trainable parameters).
        step_metrics: names of the Trainer's logged values to report with each step as ``metrics``
            (none for SFT: ``on_step`` is then called without the keyword).
    """

    def __init__(
        self,
        sink: ProgressSink,
        describe: Callable[[], dict[str, int]] | None = None,
        step_metrics: Collection[str] = (),
    ) -> None:
        self.sink = sink
        self.describe = describe or dict
        self.step_metrics = tuple(step_metrics)
        self.last_step_metrics: dict[str, float] = {}
        self.stopped_at: int | None = None
        self.last_checkpoint: str | None = None
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if isinstance(self.sink, DetailSink):
            fields = {
                "train_examples": 0,
                "eval_examples": 0,
                "dropped_examples": 0,
                "trainable_parameters": 0,
            }
            fields.update(self.describe())
            self.sink.on_started(Started(total_steps=state.max_steps, start_step=state.global_step, **fields))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.global_step < state.max_steps and self.sink.should_stop():
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        elif state.global_step >= state.max_steps:
            if args.eval_strategy != IntervalStrategy.NO:
                control.should_evaluate = True
            if args.load_best_model_at_end:
                control.should_save = True
            elif state.global_step % max(state.save_steps, 1):
                control.should_save = False
        return control

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            self.first_loss = loss if self.first_loss is None else self.first_loss
            self.last_loss = loss
            epoch = float(state.epoch or 0.0)
            report = (state.global_step, state.max_steps, epoch, loss, state.num_input_tokens_seen)
            extra = _picked(logs, self.step_metrics)
            if extra:
                self.last_step_metrics = extra
                self.sink.on_step(*report, metrics=extra)
            else:
                self.sink.on_step(*report)
        if "eval_loss" in logs:
            self.last_eval_loss = float(logs["eval_loss"])
            if isinstance(self.sink, DetailSink):
                self.sink.on_eval(state.global_step, self.last_eval_loss)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.last_checkpoint = checkpoint_dir(args.output_dir, state.global_step)
        self.sink.on_checkpoint(state.global_step, self.last_checkpoint)


class MetricsFileCallback(TrainerCallback):
    """Writes each logged loss, learning rate and gradient norm, and each validation loss, as
    TensorBoard scalars (``train/loss``, ``train/learning_rate``, ``train/grad_norm``, ``eval/loss``).

    The writer's own file (named after the host) stays in ``scratch``; ``export(folder)`` copies
    the run's files to ``folder/runs/`` under names made of the step each attempt started from
    (``events.out.tfevents.from-step-00000040``), so a resumed run's folder holds every attempt's
    file in order. Each checkpoint gets a copy at its save (before the sink hears of it), so the
    attempt that resumes from it carries the earlier points on (``restore``); the recipe exports
    to the final model folder.

    Args:
        scratch: the folder the writer writes to (not shipped).
    """

    TAGS = {
        "loss": "train/loss",
        "learning_rate": "train/learning_rate",
        "grad_norm": "train/grad_norm",
        "eval_loss": "eval/loss",
    }
    FOLDER = "runs"

    def __init__(self, scratch: Path) -> None:
        self.scratch = Path(scratch)
        self.earlier: Path | None = None
        self.start_step = 0
        self.writer: Any = None

    def restore(self, checkpoint: Path) -> None:
        """Carry on the event files saved with ``checkpoint`` (the earlier attempts' points)."""
        if (Path(checkpoint) / self.FOLDER).is_dir():
            self.earlier = Path(checkpoint) / self.FOLDER

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        shutil.rmtree(self.scratch, ignore_errors=True)
        self.start_step = state.global_step
        self.writer = SummaryWriter(log_dir=str(self.scratch), flush_secs=3600)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.writer is None:
            return
        for key, tag in self.TAGS.items():
            value = (logs or {}).get(key)
            if isinstance(value, int | float):
                self.writer.add_scalar(tag, float(value), state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.export(Path(checkpoint_dir(args.output_dir, state.global_step)))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.writer is not None:
            self.writer.close()

    def export(self, folder: Path) -> Path:
        """Copy every attempt's event file so far to ``folder/runs/``; return that folder."""
        target = Path(folder) / self.FOLDER
        if self.earlier is not None and self.earlier.resolve() != target.resolve():
            shutil.copytree(self.earlier, target, dirs_exist_ok=True)
        if self.writer is not None:
            self.writer.flush()
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.scratch.glob("events.out.tfevents.*")):
            shutil.copyfile(path, target / f"events.out.tfevents.from-step-{self.start_step:08d}")
        return target


def _picked(logs: Mapping[str, float], names: tuple[str, ...]) -> dict[str, float]:
    return {name: float(logs[name]) for name in names if isinstance(logs.get(name), int | float)}
