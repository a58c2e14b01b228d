"""Fixtures of the domain tests: fixed times, a job factory, and a snapshot of an aggregate's state."""

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

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float = 0) -> datetime:
    """``T0`` plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


def state_of(aggregate: DomainAggregate) -> dict[str, Any]:
    """A deep copy of everything an aggregate holds, pending events included."""
    return copy.deepcopy(dict(vars(aggregate)))


def submit_job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": "job_1",
        "user_id": "usr_1",
        "base_model": "tiny-llama",
        "dataset_id": "ds_1",
        "model_id": "mdl_1",
        "config": {"epochs": 1},
        "gpu_type": "h100-80gb",
        "gpu_count": 2,
        "max_cost_usd_micros": 5_000_000,
        "estimate_usd_micros": 1_000_000,
        "at": at(),
    }
    fields.update(overrides)
    return Job.submit(**fields)


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
