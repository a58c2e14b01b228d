"""``config.yml`` text to a checked ``TrainingConfig``, for the trainer; the YAML is read by
``domain.config_yaml``, the one reader the API and the CLI use too (duplicate keys refused)."""

from __future__ import annotations

import yaml

from domain.config_yaml import config_from_yaml
from domain.training_config import TrainingConfig, parse_training_config, training_config_to_dict

__all__ = ["dump_training_config", "load_training_config"]


def load_training_config(text: str | bytes) -> TrainingConfig:
    """Read the YAML and check it whole; an empty document gives every default.

    Raises:
        ValidationFailed: the text is not YAML or writes a key twice (``where`` = ``config.yml line N``),
            is not a mapping (``config.yml``), or the config has problems (``ConfigInvalid``, naming
            every bad key).
    """
    data = config_from_yaml(text, where="config.yml", at_line=lambda line: f"config.yml line {line}")
    return parse_training_config(data)


def dump_training_config(config: TrainingConfig) -> str:
    """The config as YAML with every key (defaults included), in schema order."""
    return yaml.safe_dump(training_config_to_dict(config), sort_keys=False)
