"""Preference tuning (``objective: dpo``): Direct Preference Optimization on TRL's ``DPOTrainer``.

``DPORecipe`` is ``SFTRecipe`` with its own data, model and Trainer; everything else is the SFT
recipe's (fail-fast inputs, precision, the Trainer's arguments from the config, progress and stop
through the ``ProgressSink``, checkpoints, resume, ``save`` and ``cleanup``), so a DPO job runs,
reports, stops and resumes like any other. ``DPOTrainer`` is a transformers ``Trainer``: the
same callbacks and checkpoint folders.

Data: the processed preference file (``domain.dataset_format``), one TRL conversational pair a
line, ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}``. TRL renders
each with the tokenizer's chat template, takes the loss on the two completions only, truncates
to ``max_seq_length`` (keeping the start) and drops a pair whose prompt alone fills it
(``dropped_examples`` counts them).

The reference the policy is compared against is the weights the job starts from:

- LoRA from the base: the base with the adapter disabled (TRL wraps the base itself, given the
  adapter's config, and computes the reference log-probabilities with the adapter off);
- LoRA from another job's adapter (``init_from``): a frozen copy of that adapter (TRL's ``ref``
  adapter; only ``default``, the trained one, is saved);
- full: a second, frozen copy of the starting weights (base or ``init_from``), in the low
  precision on a GPU.

Per step the loss and TRL's preference measures are reported (``Step.metrics``, see
``STEP_METRICS``): ``rewards/chosen`` and ``rewards/rejected`` (beta times the policy/reference
log-ratio of each completion), ``rewards/margins`` (their difference), ``rewards/accuracies``
(the share of pairs whose chosen reward is higher), ``logps/chosen`` and ``logps/rejected``.
The final metrics add the last step's values (``last_rewards_margins``...).

Decisions: TRL turns dropout off (``disable_dropout``, its default: the policy and reference
log-probabilities of one pair must be comparable), so ``lora.dropout`` has no effect here; the
loss is TRL's ``sigmoid`` (the DPO paper's) with ``beta`` = ``dpo_beta``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
import transformers
from transformers import AutoModelForCausalLM

from domain.errors import ValidationFailed
from runners.trainer.data import held_out
from runners.trainer.recipe import SFTRecipe

__all__ = ["STEP_METRICS", "DPORecipe", "PreferenceData", "read_preference_records"]

STEP_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
"""TRL's per-step measures reported with each step (``Step.metrics``)."""

_PAIR_KEYS = ("prompt", "chosen", "rejected")
Pair = dict[str, list[dict[str, str]]]


class PreferenceData(NamedTuple):
    """The pairs to train on and those held out (``validation_split``); ``dropped`` is filled by TRL."""

    train: list[Pair]
    eval: list[Pair]
    dropped: int


def read_preference_records(path: Path | str) -> list[Pair]:
    """Read a processed preference JSONL file; ValidationFailed names the line that is not a pair."""
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pair = {key: [_message(m) for m in record[key]] for key in _PAIR_KEYS}
            except (ValueError, KeyError, TypeError) as exc:
                raise ValidationFailed(
                    "not a preference pair {'prompt': [...], 'chosen': [...], 'rejected': [...]} "
                    f"(is the dataset a preference dataset?): {exc!r:.200}",
                    where=f"line {number}",
                ) from exc
            if not all(pair.values()):
                raise ValidationFailed("a preference pair has an empty part", where=f"line {number}")
            pairs.append(pair)
    if not pairs:
        raise ValidationFailed("the dataset has no records", where="dataset")
    return pairs


def _message(message: Any) -> dict[str, str]:
    role, content = message["role"], message["content"]
    if not isinstance(role, str) or not isinstance(content, str):
        raise TypeError("a message's role and content must be strings")
    return {"role": role, "content": content}


class DPORecipe(SFTRecipe):
    """One DPO training attempt; see the module docstring. Same arguments and contract as ``SFTRecipe``."""

    STEP_METRICS = STEP_METRICS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ref_model: Any = None
        self._dropped = 0

    def _setup_data(self) -> PreferenceData:
        pairs = read_preference_records(self.spec.dataset_path)
        if self.spec.validation_path is not None:  # a validation dataset of preference pairs
            return PreferenceData(
                train=pairs, eval=read_preference_records(self.spec.validation_path), dropped=0
            )
        held = held_out(len(pairs), self.config.validation_split, self.config.seed)
        train = [p for i, p in enumerate(pairs) if i not in held]
        return PreferenceData(train=train, eval=[pairs[i] for i in sorted(held)], dropped=0)

    def _setup_model(self) -> Any:
        start = self.spec.init_from  # the reference, also when this attempt resumes a checkpoint
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)
        if self.config.method == "full":
            model = super()._setup_model()  # the starting weights (resuming: the checkpoint's, later)
            self.ref_model = AutoModelForCausalLM.from_pretrained(start or self.base_dir, dtype=low)
            self.ref_model.config.use_cache = False
            return model
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=low)
        model.config.use_cache = False
        if start is None:
            return model  # DPOTrainer adds the adapter (peft_config): the reference is the base
        from peft import PeftModel

        return PeftModel.from_pretrained(model, start, is_trainable=True, config=self._peft_config())

    def _setup_trainer(self) -> Any:
        assert self.data is not None
        import datasets
        from peft import PeftModel
        from trl import DPOConfig, DPOTrainer

        datasets.disable_progress_bars()  # "Tokenizing train dataset" bars would fill job.log
        cfg = self.config
        args = DPOConfig(
            **self._training_arguments(),
            beta=cfg.dpo_beta,
            loss_type=["sigmoid"],
            max_length=cfg.max_seq_length,
            precompute_ref_log_probs=False,
        )
        wrap = cfg.method == "lora" and not isinstance(self.model, PeftModel)
        try:
            trainer = DPOTrainer(
                model=self.model,
                ref_model=self.ref_model,
                args=args,
                train_dataset=datasets.Dataset.from_list(self.data.train),
                eval_dataset=datasets.Dataset.from_list(self.data.eval) if self.data.eval else None,
                processing_class=self.tokenizer,
                callbacks=self._callbacks(),
                peft_config=self._peft_config() if wrap else None,
            )
        except ValueError as exc:
            if wrap and "target modules" in str(exc).lower():
                raise ValidationFailed(str(exc), where="lora.target_modules") from exc
            raise
        trainer.remove_callback(transformers.PrinterCallback)  # stdout carries our events
        self.model = trainer.model  # the policy as trained (wrapped with its adapter)
        kept = len(trainer.train_dataset) + (len(trainer.eval_dataset) if trainer.eval_dataset else 0)
        self._dropped = len(self.data.train) + len(self.data.eval) - kept
        if len(trainer.train_dataset) == 0:
            raise ValidationFailed(
                f"every pair's prompt fills max_seq_length={cfg.max_seq_length}", where="max_seq_length"
            )
        return trainer

    def _describe(self) -> dict[str, int]:
        described = super()._describe()
        described["dropped_examples"] = self._dropped
        if self.trainer is not None:
            described["train_examples"] = len(self.trainer.train_dataset)
        return described

    def _metrics(self, hf_metrics: dict[str, Any], train_seconds: float) -> dict[str, float]:
        metrics = super()._metrics(hf_metrics, train_seconds)
        for name, value in self.progress.last_step_metrics.items():
            metrics[f"last_{name.replace('/', '_')}"] = value
        return metrics
