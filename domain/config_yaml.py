"""A training config written as YAML, read into a mapping: the one reader the API and the CLI share.

The API reads the text of a start request, the CLI a local file; both get the same checks and
the same messages, and say where the mistake is in their own terms (``at_line``). The mapping
is then checked whole by ``domain.training_config.parse_training_config``.

The only domain module that imports PyYAML (``domain.training_config`` stays pure); it is light
enough for the CLI to import inside its commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from domain.errors import ValidationFailed

__all__ = ["config_from_yaml"]


def config_from_yaml(text: str | bytes, *, where: str, at_line: Callable[[int], str]) -> dict[str, Any]:
    """The config as a mapping; an empty document is ``{}``.

    Args:
        text: the YAML (``yaml.safe_load``).
        where: what names the config in errors (``config``, a file's path).
        at_line: what names line N of it (``config line 3``, ``config.yml:3``).

    Raises:
        ValidationFailed: the text is not YAML (``where`` = ``at_line(N)`` where the parser says
            which line, else ``where``), or its top level is not a mapping (``where``).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc
        raise ValidationFailed(
            f"config is not valid YAML: {problem}", where=at_line(mark.line + 1) if mark else where
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed("config must be a mapping of keys to values", where=where)
    return data
