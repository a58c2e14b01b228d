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
    assert read("base: &b {r: 1}\nlora:\n  <<: *b\n  r: 2\n") == {"base": {"r": 1}, "lora": {"r": 2}}
    assert read("1: a\n'1': b\n") == {1: "a", "1": "b"}  # two keys: a number and a string


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("epochs: 1\nlora: {r: 4\n", "config is not valid YAML: expected ',' or '}'", "cfg.yml:3"),
        ("a: b: c\n", "config is not valid YAML: mapping values are not allowed here", "cfg.yml:1"),
        ("- 1\n- 2\n", "config must be a mapping of keys to values", "cfg.yml"),
        ("5\n", "config must be a mapping of keys to values", "cfg.yml"),
        (
            "epochs: 1\nepochs: 2\n",
            "config is not valid YAML: key 'epochs' appears twice (on lines 1 and 2)",
            "cfg.yml:2",
        ),
        ("epochs: 1\n'epochs': 1\n", "config is not valid YAML: key 'epochs' appears twice", "cfg.yml:2"),
        (
            "lora:\n  r: 4\n  alpha: 8\n  r: 8\nseed: 1\nseed: 2\n",
            "config is not valid YAML: key 'lora.r'",
            "cfg.yml:4",
        ),
        (
            "lora: {r: 4, r: 8}\n",
            "config is not valid YAML: key 'lora.r' appears twice (on line 1)",
            "cfg.yml:1",
        ),
        ("a: " + "[" * 1000 + "]" * 1000 + "\n", "config is nested too deeply", "cfg.yml"),
    ],
)
def test_mistakes_name_the_line_or_the_file(text: str, message: str, where: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        read(text)
    assert caught.value.message.startswith(message) and caught.value.where == where
