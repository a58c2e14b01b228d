"""The trainer's run spec, ``run.yaml`` in the working folder: what one training attempt needs, in
local paths, written by the job runner, read by the trainer (made from the bucket's attempt spec,
``runners.attempt_spec``).

::

    job_id: job_3f2a...            # ids as in domain.ids
    user_id: usr_...
    attempt: 1
    base_model_dir: /abs/work/base      # local folder: config + tokenizer + weights
    dataset_path: /abs/work/train.jsonl # processed OpenAI chat records {"messages": [...]}
    validation_path: null               # the validation dataset (config.validation_dataset_id), same format
    output_dir: /abs/work/out           # checkpoints/checkpoint-<step>/ and model/ go here
    resume_from: null                   # a checkpoint folder to continue from
    init_from: null                     # weights to start from (adapter or full), when not resuming
    stop_file: null                     # default <output_dir>/STOP; its appearance stops training
    base_model_ref: null                # what the adapter records as its base (default base_model_dir)
    config: {...}                       # a TrainingConfig as a mapping (see domain.training_config)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from domain.errors import ValidationFailed
from domain.training_config import TrainingConfig, parse_training_config, training_config_to_dict

__all__ = ["RunSpec", "dump_run_spec", "parse_run_spec", "parse_run_yaml", "read_run_spec", "write_run_spec"]


class RunSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One attempt of one job; paths are local to the machine that trains."""

    job_id: str
    user_id: str
    attempt: int
    base_model_dir: str
    dataset_path: str
    output_dir: str
    config: TrainingConfig = msgspec.field(default_factory=TrainingConfig)
    resume_from: str | None = None
    stop_file: str | None = None
    base_model_ref: str | None = None
    validation_path: str | None = None
    """The validation dataset's processed records (set when ``config.validation_dataset_id`` is)."""
    init_from: str | None = None
    """A folder of the weights training starts from (an adapter, or full weights with their
    config.json: the method's); its optimizer, schedule and step count start afresh."""

    @property
    def stop_path(self) -> Path:
        """The file whose appearance asks the trainer to checkpoint and stop."""
        return Path(self.stop_file) if self.stop_file else Path(self.output_dir) / "STOP"


def read_run_spec(path: Path | str) -> RunSpec:
    """Load and check a run.yaml; ValidationFailed names the bad key (``config.*`` keys all at once)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationFailed(f"cannot read {path}: {exc}", where="run.yaml") from exc
    return parse_run_spec(data)


def parse_run_spec(data: Any) -> RunSpec:
    """Check a run.yaml mapping (``config`` through ``parse_training_config``)."""
    return parse_run_yaml(data, RunSpec)


S = TypeVar("S", bound=msgspec.Struct)
"""A run spec type: ``RunSpec`` here, ``JobRunSpec`` in the bucket."""


def parse_run_yaml(data: Any, spec_type: type[S]) -> S:
    """Check a run.yaml mapping as ``spec_type`` (this trainer's, or the bucket's attempt spec).

    ValidationFailed names what is wrong; the ``config.*`` keys are checked whole, all at once
    (``parse_training_config``), before the other fields.
    """
    if not isinstance(data, dict):
        raise ValidationFailed("run.yaml must be a mapping", where="run.yaml")
    config = parse_training_config(data.get("config"))
    try:
        return msgspec.convert({**data, "config": training_config_to_dict(config)}, spec_type)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"run.yaml: {exc}", where="run.yaml") from exc


def dump_run_spec(spec: RunSpec) -> str:
    """The spec as YAML (the config with every key)."""
    return yaml.safe_dump(msgspec.to_builtins(spec), sort_keys=False)


def write_run_spec(path: Path | str, spec: RunSpec) -> Path:
    """Write ``spec`` to ``path`` as YAML; return the path."""
    target = Path(path)
    target.write_text(dump_run_spec(spec))
    return target
