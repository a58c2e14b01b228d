"""A training config written as YAML, read into a mapping: the one reader of a config's YAML.

The API reads the text of a start request, the CLI a local file, the trainer ``config.yml``; all
get the same checks and the same messages, and say where the mistake is in their own terms
(``at_line``). The mapping is then checked whole by ``domain.training_config.parse_training_config``.

Stricter than ``yaml.safe_load`` in two ways: a key written twice in one mapping
(``epochs: 1`` then ``epochs: 2``) is refused, naming the key and both lines, where PyYAML
silently keeps the last (YAML itself requires keys to be unique); and a document nested so
deeply that PyYAML's recursive composer would overflow the stack is refused as such.

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
        text: the YAML (PyYAML's safe loader).
        where: what names the config in errors (``config``, a file's path).
        at_line: what names line N of it (``config line 3``, ``config.yml:3``).

    Raises:
        ValidationFailed: the text is not YAML (``where`` = ``at_line(N)`` where the parser says
            which line, else ``where``), a key appears twice in one mapping (``at_line`` of the
            second), it is nested too deeply, or its top level is not a mapping (``where``).
    """
    try:
        data = _load(text)
    except _DuplicateKey as exc:
        lines = f"on line {exc.line}" if exc.first == exc.line else f"on lines {exc.first} and {exc.line}"
        raise ValidationFailed(
            f"config is not valid YAML: key {exc.key!r} appears twice ({lines}); write each key once",
            where=at_line(exc.line),
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc
        raise ValidationFailed(
            f"config is not valid YAML: {problem}", where=at_line(mark.line + 1) if mark else where
        ) from exc
    except RecursionError:
        raise ValidationFailed("config is nested too deeply to be a training config", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed("config must be a mapping of keys to values", where=where)
    return data


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.line = key, first, line


def _load(text: str | bytes) -> Any:
    """``yaml.safe_load`` with every mapping's keys checked unique between composing and constructing."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(loader, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_unique_keys(loader: yaml.SafeLoader, root: yaml.Node) -> None:
    """_DuplicateKey for the first key (in document order) written twice in one mapping.

    Keys are compared as values (``1`` and ``0x1`` are one key, ``1`` and ``"1"`` two), and named
    by their dotted path (``lora.r``). Merge keys (``<<: *base``) may be overridden, as YAML says.
    """
    found: list[_DuplicateKey] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: already checked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    stack.append((value_node, path))
                    continue
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):  # a complex key: the constructor refuses it
                    stack.append((value_node, path))
                    continue
                key = loader.construct_object(key_node)
                name = f"{path}.{key}" if path else str(key)
                if key in first:
                    found.append(_DuplicateKey(name, first[key], line))
                    continue
                first[key] = line
                stack.append((value_node, name))
    if found:
        raise min(found, key=lambda d: d.line)


_MERGE = "tag:yaml.org,2002:merge"
