"""The one reader of a training config's YAML: a mapping, or an error naming the line."""

from __future__ import annotations

import pytest

from domain.config_yaml import config_from_yaml
from domain.errors import ValidationFailed


def read(text: str) -> dict[str, object]:
    return config_from_yaml(text, where="cfg.yml", at_line=lambda line: f"cfg.yml:{line}")


def test_a_mapping_is_returned_and_an_empty_document_is_empty() -> None:
    assert read("epochs: 2\nlora: {r: 4}\n") == {"epochs": 2, "lora": {"r": 4}}
    assert read("") == read("~\n") == {}
    assert read("a: 1\na: 2\n") == {"a": 2}  # PyYAML's safe_load: the last duplicate key wins


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("epochs: 1\nlora: {r: 4\n", "config is not valid YAML: expected ',' or '}'", "cfg.yml:3"),
        ("a: b: c\n", "config is not valid YAML: mapping values are not allowed here", "cfg.yml:1"),
        ("- 1\n- 2\n", "config must be a mapping of keys to values", "cfg.yml"),
        ("5\n", "config must be a mapping of keys to values", "cfg.yml"),
    ],
)
def test_mistakes_name_the_line_or_the_file(text: str, message: str, where: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        read(text)
    assert caught.value.message.startswith(message) and caught.value.where == where
