"""The trainer's wire formats: run.yaml (RunSpec) and its stdout events."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.errors import ValidationFailed
from domain.training_config import ConfigInvalid, parse_training_config
from runners.trainer.events import Checkpoint, Done, Error, Started, Step, decode_event, encode_event
from runners.trainer.run_spec import RunSpec, parse_run_spec, read_run_spec, write_run_spec

SPEC = {
    "job_id": "job_1",
    "user_id": "usr_1",
    "attempt": 2,
    "base_model_dir": "/w/base",
    "dataset_path": "/w/train.jsonl",
    "output_dir": "/w/out",
    "config": {"epochs": 1, "lora": {"r": 4}},
}


def test_run_yaml_round_trips_with_the_full_config(tmp_path: Path) -> None:
    spec = parse_run_spec(SPEC)
    assert spec.config == parse_training_config({"epochs": 1, "lora": {"r": 4}})
    assert read_run_spec(write_run_spec(tmp_path / "run.yaml", spec)) == spec
    assert spec.stop_path == Path("/w/out/STOP") and spec.resume_from is None


def test_run_yaml_refuses_bad_config_keys_and_unknown_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        parse_run_spec({**SPEC, "config": {"lora": {"r": -1}}})
    assert caught.value.where == "lora.r"
    with pytest.raises(ValidationFailed):
        parse_run_spec({**SPEC, "surprise": 1})
    with pytest.raises(ValidationFailed) as missing:
        read_run_spec(tmp_path / "absent.yaml")
    assert missing.value.where == "run.yaml"


@pytest.mark.parametrize(
    "event",
    [
        Started(
            total_steps=9,
            start_step=3,
            train_examples=5,
            eval_examples=1,
            dropped_examples=0,
            trainable_parameters=7,
        ),
        Step(step=1, total_steps=9, epoch=0.5, loss=2.5, tokens=100),
        Checkpoint(step=3, path="/w/out/checkpoints/checkpoint-3"),
        Done(
            status="stopped", step=3, total_steps=9, model_dir=None, checkpoint="/c", metrics={"tokens": 1.0}
        ),
        Error(code="invalid", message="bad", where="lora.r", retryable=False),
    ],
)
def test_events_are_one_json_line_each_and_decode_back(event) -> None:
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_event(line) == event and decode_event(line.decode()) == event


@pytest.mark.parametrize(
    "line", [b"", b"{'loss': 1.0}", b'{"event": "mystery"}', b"Loading weights: 100%", b"{"]
)
def test_other_lines_are_not_events(line: bytes) -> None:
    assert decode_event(line) is None


def test_run_spec_is_a_frozen_struct() -> None:
    spec = parse_run_spec(SPEC)
    with pytest.raises(AttributeError):
        spec.attempt = 3  # type: ignore[misc]
    assert isinstance(spec, RunSpec)
