"""Chat-format SFT recipe: LoRA (default) or full fine-tuning with transformers' Trainer.

Read like a torchtune recipe: ``__init__`` fails fast on impossible settings (before any
model is loaded), ``setup`` builds each component in a ``_setup_*`` helper, ``train`` runs
(resuming from a checkpoint when asked; a job started from another job's checkpoint or model
begins from its weights, ``init_from``: a fresh optimizer, schedule and step count), ``save``
writes the final weights, ``cleanup`` frees memory. Progress goes to a ``ProgressSink``; the
recipe never touches the event store.

Output layout under ``output_dir``::

    checkpoints/checkpoint-<step>/   resumable (adapter or weights + optimizer, scheduler, RNG, trainer
                                     state), and runs/ (the TensorBoard event files so far)
    model/                           final adapter (LoRA) or full weights, plus the tokenizer, and runs/:
                                     the run's TensorBoard event files (every attempt's; shipped with it)
    metrics.json                     the final metrics (also in the ``done`` event)
    tensorboard/                     this attempt's live TensorBoard writer (copied to runs/ above)

Validation: on a held-out ``validation_split`` or a validation dataset (``validation_path``), at
every checkpoint and at the last step. With ``early_stopping_patience`` transformers'
``EarlyStoppingCallback`` ends the run after that many evaluations without an improvement of at
least ``early_stopping_threshold``, and the best checkpoint's weights are loaded at the end
(``load_best_model_at_end``), so the saved model is the best one: ``Done.reason`` is then
``early_stopped``, and the metrics' ``eval_loss`` is the best checkpoint's, at ``best_step``.
(A retried attempt whose best checkpoint was an earlier attempt's cannot load it: it saves its
last weights, and ``eval_loss`` is then theirs.)

The final LoRA adapter records ``base_model_ref`` (default: the absolute base-model folder)
as its ``base_model_name_or_path``, so ``PeftModel.from_pretrained(base, model_dir)`` and
``AutoModelForCausalLM.from_pretrained(model_dir)`` both work with plain transformers/peft.

Why transformers' ``Trainer`` rather than a hand-written loop: it already gets the hard parts
right - checkpoints that hold optimizer, scheduler, RNG and data position (a resumed run
reproduces the uninterrupted run's losses; see the tests), gradient accumulation, mixed
precision, multi-GPU through accelerate, evaluation - and its callbacks are exactly our
progress/stop seam. Its cost, measured by ``bench/bench_trainer.py`` against a bare peft loop
on the same model, data and settings in the same process: on smollm2-135m (the main job)
0.98-0.99x the bare loop's tokens per CPU-second (wall-clock 0.91-0.94x, within the +-20 %
noise of the shared machine); a fixed ~7 ms a step (``model.train()`` walking the modules,
accelerate's gradient clipping, logging) that only toy models notice (tiny-llama: ~0.85x).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from domain.errors import ValidationFailed
from runners.trainer.callbacks import MetricsFileCallback, ProgressCallback, ProgressSink
from runners.trainer.data import (
    ChatCollator,
    SFTData,
    ensure_chat_template,
    prepare_sft_data,
    read_chat_records,
)
from runners.trainer.events import Done
from runners.trainer.run_spec import RunSpec

__all__ = ["LIBRARY_NOISE", "SFTRecipe", "quiet_library_noise", "recipe_for", "run_training"]

Precision = Literal["fp32", "bf16", "fp16"]


class SFTRecipe:
    """One training attempt described by a ``RunSpec``.

    ``runners.trainer.dpo.DPORecipe`` (``objective: dpo``) is this recipe with its own data, model
    (a reference to compare against) and Trainer; inputs, precision, the training arguments,
    progress, checkpoints, ``train``, ``save`` and ``cleanup`` are these.

    Args:
        spec: the attempt (paths, resume point, config).
        sink: receives steps, checkpoints and evaluations; asked after each step whether to stop.

    Raises:
        ValidationFailed: a missing path, a precision this machine lacks (before any loading).
    """

    STEP_METRICS: tuple[str, ...] = ()
    """The Trainer's logged values reported with each step besides the loss (``Step.metrics``)."""

    def __init__(self, spec: RunSpec, sink: ProgressSink) -> None:
        self.spec = spec
        self.config = spec.config
        self.sink = sink
        self.base_dir = Path(spec.base_model_dir).absolute()
        self.output_dir = Path(spec.output_dir).absolute()
        self.checkpoint_root = self.output_dir / "checkpoints"
        self._check_inputs()
        self.precision = _select_precision(self.config.precision)
        self.tokenizer: Any = None
        self.model: Any = None
        self.data: Any = None  # SFTData here; the DPO recipe's PreferenceData
        self.trainer: Trainer | None = None
        self.progress = ProgressCallback(sink, describe=self._describe, step_metrics=self.STEP_METRICS)
        self.metrics_file = MetricsFileCallback(self.output_dir / "tensorboard")
        self.early_stopping: transformers.EarlyStoppingCallback | None = None
        if self.spec.resume_from is not None:
            self.metrics_file.restore(Path(self.spec.resume_from))

    def setup(self) -> None:
        """Seed, then tokenizer, data, model and Trainer."""
        transformers.set_seed(self.config.seed)
        self.tokenizer = self._setup_tokenizer()
        self.data = self._setup_data()
        self.model = self._setup_model()
        self.trainer = self._setup_trainer()

    def train(self) -> Done:
        """Run (or resume) training; save the final weights unless stopped.

        Returns the ``done`` event the trainer prints: ``succeeded`` (weights in ``model_dir``) or
        ``stopped`` (state in ``checkpoint``).
        """
        assert self.trainer is not None and self.data is not None, "call setup() first"
        if self.sink.should_stop():
            start = _resumed_step(self.spec.resume_from)
            return Done("stopped", start, 0, None, self.spec.resume_from, {})
        started = time.perf_counter()
        output = self.trainer.train(resume_from_checkpoint=self.spec.resume_from)
        train_seconds = time.perf_counter() - started
        state = self.trainer.state
        metrics = self._metrics(output.metrics, train_seconds)
        if self.progress.stopped_at is not None:
            return Done(
                "stopped", state.global_step, state.max_steps, None, self.progress.last_checkpoint, metrics
            )
        metrics.update(self._eval_metrics())
        reason = "early_stopped" if self._stopped_early() else None
        model_dir = self.save()
        (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return Done(
            "succeeded",
            state.global_step,
            state.max_steps,
            str(model_dir),
            self.progress.last_checkpoint,
            metrics,
            reason,
        )

    def save(self) -> Path:
        """Write the final adapter or full weights and the tokenizer to ``output_dir/model``."""
        model_dir = self.output_dir / "model"
        shutil.rmtree(model_dir, ignore_errors=True)  # no stale files from an earlier attempt
        model = self.trainer.model if self.trainer is not None else self.model
        if self.config.method == "lora":
            for peft_config in model.peft_config.values():
                peft_config.base_model_name_or_path = self.spec.base_model_ref or str(self.base_dir)
            # only the trained adapter (DPO from an adapter also holds its frozen copy, "ref")
            model.save_pretrained(model_dir, selected_adapters=["default"])
        else:
            model.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(model_dir)
        self.metrics_file.export(model_dir)
        return model_dir

    def cleanup(self) -> None:
        """Drop the model and Trainer and return accelerator memory."""
        self.trainer = None
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _check_inputs(self) -> None:
        if not (self.base_dir / "config.json").is_file():
            raise ValidationFailed(f"no model (config.json) in {self.base_dir}", where="base_model_dir")
        if not Path(self.spec.dataset_path).is_file():
            raise ValidationFailed(f"no dataset file at {self.spec.dataset_path}", where="dataset_path")
        validation = self.spec.validation_path
        if (validation is None) != (self.config.validation_dataset_id is None):
            raise ValidationFailed(
                "validation_path and config.validation_dataset_id go together", where="validation_path"
            )
        if validation is not None and not Path(validation).is_file():
            raise ValidationFailed(f"no validation dataset file at {validation}", where="validation_path")
        resume = self.spec.resume_from
        if resume is not None and not (Path(resume) / "trainer_state.json").is_file():
            raise ValidationFailed(
                f"{resume} is not a checkpoint (no trainer_state.json)", where="resume_from"
            )
        init = self.spec.init_from
        holds = "adapter_config.json" if self.config.method == "lora" else "config.json"
        if init is not None and resume is None and not (Path(init) / holds).is_file():
            what = "a LoRA adapter" if self.config.method == "lora" else "full weights"
            raise ValidationFailed(f"{init} holds no {what} (no {holds}) to start from", where="init_from")

    def _setup_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        ensure_chat_template(tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _setup_data(self) -> SFTData:
        records = read_chat_records(self.spec.dataset_path)
        validation = self.spec.validation_path
        return prepare_sft_data(
            records,
            self.tokenizer,
            max_length=self.config.max_seq_length,
            validation_split=self.config.validation_split,
            seed=self.config.seed,
            eval_records=None if validation is None else read_chat_records(validation),
        )

    def _setup_model(self) -> Any:
        lora = self.config.method == "lora"
        # LoRA keeps the frozen base in the low precision (adapters stay fp32); full fine-tuning keeps
        # fp32 master weights and trains under autocast.
        # A job started from other weights (``init_from``, not resuming its own checkpoint) loads them
        # as its initial adapter, or as the full weights, in place of the base's.
        init = self.spec.init_from if self.spec.resume_from is None else None
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)
        weights = init if init is not None and not lora else self.base_dir
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=low if lora else torch.float32)
        model.config.use_cache = False
        if not lora:
            return model
        from peft import PeftModel, get_peft_model

        peft_config = self._peft_config()
        try:
            if init is not None:  # the adapter's weights, under this job's settings (same shape)
                return PeftModel.from_pretrained(model, init, is_trainable=True, config=peft_config)
            return get_peft_model(model, peft_config)
        except ValueError as exc:
            raise ValidationFailed(str(exc), where="lora.target_modules") from exc

    def _peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.config.lora.r,
            lora_alpha=self.config.lora.alpha,
            lora_dropout=self.config.lora.dropout,
            target_modules=self.config.peft_target_modules,
            task_type="CAUSAL_LM",
        )

    def _training_arguments(self) -> dict[str, Any]:
        """The Trainer's arguments from the config (the DPO recipe's ``DPOConfig`` takes them too)."""
        assert self.data is not None
        cfg = self.config
        has_eval = bool(self.data.eval)
        early = self._stops_early()
        return dict(
            output_dir=str(self.checkpoint_root),
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_steps or cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            seed=cfg.seed,
            data_seed=cfg.seed,
            bf16=self.precision == "bf16",
            fp16=self.precision == "fp16",
            use_cpu=not torch.cuda.is_available(),
            activation_checkpointing=cfg.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="steps",
            save_steps=cfg.checkpoint_every_steps,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=cfg.checkpoint_every_steps if has_eval else None,
            metric_for_best_model="eval_loss" if has_eval else None,
            greater_is_better=False if has_eval else None,
            load_best_model_at_end=early,
            include_num_input_tokens_seen="non_padding",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            report_to="none",
            disable_tqdm=True,
        )

    def _setup_trainer(self) -> Trainer:
        assert self.data is not None
        trainer = _SFTTrainer(
            model=self.model,
            args=TrainingArguments(**self._training_arguments()),
            train_dataset=self.data.train,
            eval_dataset=self.data.eval or None,
            data_collator=ChatCollator(self.tokenizer.pad_token_id, 8 if torch.cuda.is_available() else None),
            processing_class=self.tokenizer,
            callbacks=self._callbacks(),
        )
        trainer.remove_callback(
            transformers.PrinterCallback
        )  # it prints logs on stdout, which carries our events
        return trainer

    def _stops_early(self) -> bool:
        """Whether early stopping is on: a validation set and a patience."""
        return (
            bool(self.data is not None and self.data.eval) and self.config.early_stopping_patience is not None
        )

    def _callbacks(self) -> list[TrainerCallback]:
        """The event files first (a checkpoint holds them before the sink hears of it), the progress
        sink, and the early stopper when it is on (kept as ``early_stopping``)."""
        callbacks: list[TrainerCallback] = [self.metrics_file, self.progress]
        if self._stops_early():
            self.early_stopping = transformers.EarlyStoppingCallback(
                early_stopping_patience=self.config.early_stopping_patience or 1,
                early_stopping_threshold=self.config.early_stopping_threshold,
            )
            callbacks.append(self.early_stopping)
        return callbacks

    def _describe(self) -> dict[str, int]:
        data = self.data or SFTData([], [], 0)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad) if self.model else 0
        return {
            "train_examples": len(data.train),
            "eval_examples": len(data.eval),
            "dropped_examples": data.dropped,
            "trainable_parameters": trainable,
        }

    def _eval_metrics(self) -> dict[str, float]:
        """``eval_loss`` of the weights saved (the best checkpoint's when it was loaded, else the last
        evaluation's), and ``best_step`` with its ``best_eval_loss``; {} without a validation set."""
        state = self.trainer.state if self.trainer is not None else None
        last = self.progress.last_eval_loss
        if state is None or last is None:
            return {}
        metrics = {"eval_loss": last}
        if state.best_metric is not None and state.best_global_step:
            metrics["best_step"] = float(state.best_global_step)
            metrics["best_eval_loss"] = float(state.best_metric)
            if (
                self.trainer is not None
                and self.trainer.args.load_best_model_at_end
                and state.best_model_checkpoint
            ):
                metrics["eval_loss"] = float(state.best_metric)  # _load_best_model loaded its weights
        return metrics

    def _stopped_early(self) -> bool:
        """True when the early-stopping callback ended the run before its last step."""
        stopper = self.early_stopping
        state = self.trainer.state if self.trainer is not None else None
        return (
            stopper is not None
            and state is not None
            and state.global_step < state.max_steps
            and stopper.early_stopping_patience_counter >= stopper.early_stopping_patience
        )

    def _metrics(self, hf_metrics: dict[str, Any], train_seconds: float) -> dict[str, float]:
        state = self.trainer.state if self.trainer is not None else None
        tokens = float(state.num_input_tokens_seen) if state is not None else 0.0
        session_tokens = tokens - float(getattr(self.trainer, "_initial_num_input_tokens_seen", 0) or 0)
        metrics = {
            "train_loss": float(hf_metrics.get("train_loss", math.nan)),
            "first_loss": self.progress.first_loss if self.progress.first_loss is not None else math.nan,
            "last_loss": self.progress.last_loss if self.progress.last_loss is not None else math.nan,
            "steps": float(state.global_step if state is not None else 0),
            "epochs": float(state.epoch or 0.0) if state is not None else 0.0,
            "tokens": tokens,
            "train_seconds": round(train_seconds, 3),
            "tokens_per_second": round(session_tokens / train_seconds, 3) if train_seconds > 0 else 0.0,
        }
        return {k: v for k, v in metrics.items() if not math.isnan(v)}


class _SFTTrainer(Trainer):
    """Trainer that counts the model's parameters once for its FLOP estimate.

    The stock ``floating_point_ops`` recounts them (walking every module) on every step:
    about 5 ms a step, which a small model's step notices (measured with bench_trainer).
    """

    _parameter_count: int | None = None

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        if self._parameter_count is None:
            self._parameter_count = int(self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs["input_ids"].numel() * self._parameter_count


LIBRARY_NOISE: tuple[tuple[type[Warning], str], ...] = (
    # peft asks the deprecated alias itself (get_peft_model); nothing a job can act on.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # peft's final save looks the base model up by its reference (``base_model_ref``, a catalogue
    # name, not a folder) to learn whether the vocabulary grew; it cannot, and assumes it did not,
    # which is true: this recipe never adds tokens or resizes the embeddings.
    (UserWarning, r"Could not find a config file in .* - will assume that the vocabulary was not modified"),
)
"""Warnings the libraries print on every job that say nothing about it (job.log stays readable);
matched by category and the start of the message, so any other warning still shows."""


@contextlib.contextmanager
def quiet_library_noise() -> Iterator[None]:
    """Leave out ``LIBRARY_NOISE`` while the block runs (restored after it)."""
    with warnings.catch_warnings():
        for category, message in LIBRARY_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def recipe_for(spec: RunSpec) -> type[SFTRecipe]:
    """The recipe of the config's ``objective``: ``SFTRecipe``, or ``DPORecipe`` for ``dpo``."""
    if spec.config.objective == "dpo":
        from runners.trainer.dpo import DPORecipe

        return DPORecipe
    return SFTRecipe


def run_training(spec: RunSpec, sink: ProgressSink) -> Done:
    """Build, train and save one attempt with its objective's recipe, quietly (``LIBRARY_NOISE``);
    always cleans up."""
    with quiet_library_noise():
        recipe = recipe_for(spec)(spec, sink)
        try:
            recipe.setup()
            return recipe.train()
        finally:
            recipe.cleanup()


def _select_precision(wanted: str) -> Precision:
    cuda = torch.cuda.is_available()
    if wanted == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if wanted == "fp16" and not cuda:
        raise ValidationFailed("fp16 training needs a CUDA GPU; use fp32 or auto", where="precision")
    if wanted == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValidationFailed("this GPU has no bf16; use fp16, fp32 or auto", where="precision")
    return wanted  # type: ignore[return-value]


def _resumed_step(checkpoint: str | None) -> int:
    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("global_step", 0))
