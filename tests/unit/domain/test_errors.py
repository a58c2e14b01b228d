"""Several problems of one request travel in one error: every key in ``where``, each spelled out."""

from __future__ import annotations

from domain.errors import NotFound, Problem, Problems, ValidationFailed


def test_problems_join_their_keys_once_and_spell_each_out() -> None:
    error = Problems(
        [Problem("epochs", "too small"), Problem("gpu_type", "no price"), Problem("epochs", "not odd")],
        subject="start request",
    )
    assert isinstance(error, ValidationFailed) and error.code == "invalid"
    assert error.where == "epochs, gpu_type"
    assert (
        error.message
        == "start request has 3 problems: epochs: too small; gpu_type: no price; epochs: not odd"
    )
    assert str(error) == error.message


def test_any_error_reads_as_its_problems() -> None:
    inner = Problems([Problem("a", "x"), Problem("b", "y")], subject="config")
    assert Problems.of(inner) == inner.problems
    assert Problems.of(NotFound("no dataset ds_1", where="dataset_id")) == (
        Problem("dataset_id", "no dataset ds_1"),
    )
    assert Problems.of(ValidationFailed("bad")) == (Problem("request", "bad"),)
