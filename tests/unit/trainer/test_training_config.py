"""The training config schema: defaults, all problems reported at once with their keys, YAML loading."""

from __future__ import annotations

import typing

import msgspec
import pytest

from domain.config_yaml import config_from_yaml
from domain.errors import ValidationFailed
from domain.training_config import (
    ConfigInvalid,
    TrainingConfig,
    parse_training_config,
    training_config_to_dict,
)
from runners.trainer.config_io import dump_training_config, load_training_config


def _problems(data: dict) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_training_config(data)
    return {p.where: p.message for p in caught.value.problems}


def test_an_empty_config_gives_the_documented_defaults() -> None:
    config = parse_training_config({})
    assert config == parse_training_config(None) == load_training_config("") == TrainingConfig()
    assert (config.method, config.lora.r, config.lora.alpha, config.lora.target_modules) == (
        "lora",
        8,
        16.0,
        ["q_proj", "v_proj"],
    )
    assert (config.epochs, config.batch_size, config.learning_rate, config.lr_scheduler) == (
        3,
        4,
        2e-4,
        "cosine",
    )
    assert (config.gpu_type, config.gpu_count, config.heartbeat_interval_seconds, config.max_retries) == (
        "cpu",
        1,
        10.0,
        2,
    )
    assert config.max_cost is None and config.max_cost_usd_micros is None and config.max_steps is None


def test_every_default_appears_in_the_module_docstring() -> None:
    import domain.training_config as module

    defaults = training_config_to_dict(TrainingConfig())
    keys = [k for k in defaults if k != "lora"] + [f"lora.{k}" for k in defaults["lora"]]
    for key in keys:
        assert f"\n{key} " in module.__doc__, key


def test_a_config_round_trips_through_dict_and_yaml() -> None:
    config = parse_training_config({"method": "full", "lora": {"r": 4}, "max_cost": "3.5", "max_steps": 7})
    assert parse_training_config(training_config_to_dict(config)) == config
    assert load_training_config(dump_training_config(config)) == config


def test_unknown_keys_are_refused_with_their_dotted_key() -> None:
    problems = _problems({"learning_rat": 0.1, "lora": {"rank": 8}})
    assert set(problems) == {"learning_rat", "lora.rank"}
    assert "did you mean 'learning_rate'" in problems["learning_rat"]
    assert "unknown key" in problems["lora.rank"]


def test_all_problems_are_reported_together_in_one_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_training_config(
            {
                "epochs": 0,
                "lora": {"r": 2000, "dropout": 1.0},
                "learning_rate": -1,
                "method": "qlora",
                "seed": "x",
            }
        )
    error = caught.value
    assert set(error.where.split(", ")) == {
        "epochs",
        "lora.r",
        "lora.dropout",
        "learning_rate",
        "method",
        "seed",
    }
    assert error.message.startswith("training config has 6 problems")


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("method", "lora, full"),
        ("lr_scheduler", "linear, cosine, constant, constant_with_warmup"),
        ("precision", "auto, fp32, bf16, fp16"),
    ],
)
@pytest.mark.parametrize("given", ["foo", 3, None])
def test_an_enum_error_lists_every_allowed_value(key: str, allowed: str, given: object) -> None:
    assert _problems({key: given})[key] == f"must be one of {allowed} (got {given!r})"


def test_an_enum_typo_suggests_the_closest_value() -> None:
    assert "(got 'cosin'; did you mean 'cosine'?)" in _problems({"lr_scheduler": "cosin"})["lr_scheduler"]


@pytest.mark.parametrize(
    ("yaml_text", "hint"),
    [
        ("learning_rate: 1e-4", "YAML reads 1e-4 as text: write 1.0e-4"),
        ("learning_rate: 2.5e4", "YAML reads 2.5e4 as text: write 2.5e+4"),
        ('epochs: "2"', "write the number without quotes"),
    ],
)
def test_a_number_yaml_reads_as_text_says_how_to_write_it(yaml_text: str, hint: str) -> None:
    [message] = _problems(config_from_yaml(yaml_text, where="config", at_line=str)).values()
    assert message.endswith(f"{hint})")


def test_every_enum_valued_key_is_covered_by_the_choices_message() -> None:
    enum_keys = {
        f.name for f in msgspec.structs.fields(TrainingConfig) if typing.get_origin(f.type) is typing.Literal
    }
    assert enum_keys >= {"method", "lr_scheduler", "precision"}
    for key in enum_keys:
        assert _problems({key: "nope"})[key].startswith("must be one of ")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"epochs": 1001}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": True}, "learning_rate"),
        ({"lr_scheduler": "exponential"}, "lr_scheduler"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"max_seq_length": 8}, "max_seq_length"),
        ({"validation_split": 0.9}, "validation_split"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"gpu_count": 17}, "gpu_count"),
        ({"gpu_type": "A100 80GB"}, "gpu_type"),
        ({"heartbeat_interval_seconds": 0}, "heartbeat_interval_seconds"),
        ({"max_retries": -1}, "max_retries"),
        ({"lora": {"alpha": 0}}, "lora.alpha"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"lora": {"target_modules": ["q_proj", "../x"]}}, "lora.target_modules[1]"),
        ({"lora": 8}, "lora"),
        ({"warmup_ratio": 0.1, "warmup_steps": 10}, "warmup_steps"),
        ({"lora": {"target_modules": ["all-linear", "q_proj"]}}, "lora.target_modules"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(data: dict, key: str) -> None:
    assert set(_problems(data)) == {key}


@pytest.mark.parametrize(
    ("given", "micros", "stored"),
    [
        ("12.50", 12_500_000, "12.5"),
        (10, 10_000_000, "10"),
        ("$0.000001", 1, "0.000001"),
        (2.25, 2_250_000, "2.25"),
    ],
)
def test_max_cost_is_dollars_kept_exactly_as_micros(given: object, micros: int, stored: str) -> None:
    config = parse_training_config({"max_cost": given})
    assert (config.max_cost, config.max_cost_usd_micros) == (stored, micros)


@pytest.mark.parametrize("given", ["0", "-1", "1.0000001", "ten", "NaN", True, [1]])
def test_bad_max_cost_is_refused(given: object) -> None:
    assert set(_problems({"max_cost": given})) == {"max_cost"}


def test_all_linear_reaches_peft_as_a_string() -> None:
    assert (
        parse_training_config({"lora": {"target_modules": ["all-linear"]}}).peft_target_modules
        == "all-linear"
    )
    assert parse_training_config({}).peft_target_modules == ["q_proj", "v_proj"]


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    assert set(_problems([1, 2])) == {"config"}  # type: ignore[arg-type]


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_training_config("epochs: 3\nlora: {r: 8\n")
    assert caught.value.where is not None and caught.value.where.startswith("config.yml line")


def test_a_key_written_twice_is_refused_naming_it_and_its_line() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_training_config("epochs: 1\nseed: 3\nepochs: 2\n")
    assert caught.value.where == "config.yml line 3" and "'epochs' appears twice" in caught.value.message


def test_validation_and_early_stopping_keys_default_off_and_old_configs_stay_valid() -> None:
    config = parse_training_config({"validation_split": 0.1, "epochs": 1})
    assert (
        config.validation_dataset_id,
        config.early_stopping_patience,
        config.early_stopping_threshold,
    ) == (
        None,
        None,
        0.0,
    )
    assert config.validates and not TrainingConfig().validates
    both = parse_training_config(
        {"validation_dataset_id": "ds_val", "early_stopping_patience": 2, "early_stopping_threshold": 0.01}
    )
    assert both.validates and both.early_stopping_patience == 2
    assert parse_training_config(training_config_to_dict(both)) == both


def test_early_stopping_needs_a_validation_set_and_one_validation_set_at_most() -> None:
    assert _problems({"early_stopping_patience": 3}) == {
        "early_stopping_patience": (
            "early stopping needs a validation loss: set validation_dataset_id or validation_split > 0"
        )
    }
    found = _problems(
        {"validation_dataset_id": "ds_val", "validation_split": 0.2, "early_stopping_threshold": 1}
    )
    assert set(found) == {"validation_dataset_id", "early_stopping_threshold"}
    assert "not both" in found["validation_dataset_id"]
    found = _problems({"validation_split": 0.1, "early_stopping_patience": 0, "validation_dataset_id": "a/b"})
    assert found["early_stopping_patience"].startswith("expected int >= 1")
    assert found["validation_dataset_id"].startswith("expected str matching regex")
