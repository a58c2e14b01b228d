"""``config.yml`` text to a checked ``TrainingConfig``, for the trainer (``domain.config_yaml`` reads a
config for the API and the CLI)."""

from __future__ import annotations

import yaml

from domain.errors import ValidationFailed
from domain.training_config import TrainingConfig, parse_training_config, training_config_to_dict

__all__ = ["dump_training_config", "load_training_config"]


def load_training_config(text: str | bytes) -> TrainingConfig:
    """Parse YAML (``safe_load``) and check it whole; an empty document gives every default.

    Raises:
        ValidationFailed: the text is not YAML (``where`` = ``config.yml line N``) or the config
            has problems (``ConfigInvalid``, naming every bad key).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"config.yml line {mark.line + 1}" if mark is not None else "config.yml"
        reason = getattr(exc, "problem", None) or exc
        raise ValidationFailed(f"not valid YAML: {reason}", where=where) from exc
    return parse_training_config(data)


def dump_training_config(config: TrainingConfig) -> str:
    """The config as YAML with every key (defaults included), in schema order."""
    return yaml.safe_dump(training_config_to_dict(config), sort_keys=False)
