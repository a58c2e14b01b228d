"""Fixtures of the domain tests: fixed times, job and model factories, a snapshot of an aggregate's state."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.base import DomainAggregate
from domain.errors import ValidationFailed
from domain.job import Job
from domain.model import Model
from tests.jobs import JOB_FIELDS, new_job, with_defaults

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float = 0) -> datetime:
    """``T0`` plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


def state_of(aggregate: DomainAggregate) -> dict[str, Any]:
    """A deep copy of everything an aggregate holds, pending events included."""
    return copy.deepcopy(dict(vars(aggregate)))


def submit_job(**overrides: Any) -> Job:
    """A submitted job at ``T0``: ``tests.jobs.JOB_FIELDS`` with ``overrides`` (``at`` among them)."""
    return new_job(**with_defaults({"at": at()}, overrides))


def register_model(**overrides: Any) -> Model:
    """The ready LoRA adapter that the default job (its ids and base model) trained, with ``overrides``."""
    trained_by = {key: JOB_FIELDS[key] for key in ("model_id", "user_id", "job_id", "base_model")}
    weights = {
        "kind": "lora",
        "weights_prefix": f"users/{trained_by['user_id']}/models/{trained_by['model_id']}/weights/",
        "sha256": "0" * 64,
        "size_bytes": 1234,
        "metrics": {"loss": 0.5},
    }
    return Model.register(**with_defaults({**trained_by, **weights, "at": at()}, overrides))


@pytest.fixture
def make_job() -> Callable[..., Job]:
    return submit_job


@pytest.fixture
def running_job() -> Job:
    job = submit_job()
    job.queue(at(1))
    job.start(1, at(2))
    return job


@contextmanager
def refused(
    aggregate: DomainAggregate, error: type[Exception], match: str | None = None
) -> Iterator[pytest.ExceptionInfo[Exception]]:
    """The block must raise ``error`` and leave ``aggregate`` (version, state, pending events) as it was."""
    before, version = state_of(aggregate), aggregate.version
    with pytest.raises(error, match=match) as info:
        yield info
    assert aggregate.version == version
    assert state_of(aggregate) == before


def refused_field(make: Callable[..., object], override: Mapping[str, Any]) -> str | None:
    """The field ``make(**override)`` refuses: the ``where`` of the ``ValidationFailed`` it must raise."""
    with pytest.raises(ValidationFailed) as info:
        make(**override)
    return info.value.where
