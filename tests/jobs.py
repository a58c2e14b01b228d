"""Jobs in tests: a job's default fields, submitted to the ``Job`` aggregate or through a ``UserApp``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.job import Job

# Everything ``Job.submit`` takes but ``at``: a small capped job of user ``usr_1``.
JOB_FIELDS: dict[str, Any] = {
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
}


def with_defaults(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh copy of ``defaults`` (nothing mutable shared between calls) updated by ``overrides``."""
    return {**copy.deepcopy(dict(defaults)), **overrides}


def new_job(at: datetime, **overrides: Any) -> Job:
    """A ``submitted`` job: ``JOB_FIELDS`` with ``overrides``."""
    return Job.submit(**with_defaults(JOB_FIELDS, overrides), at=at)


def submit_tiny_job(app: Any, job_id: str, at: datetime, **overrides: Any) -> str:
    """``app.submit_job`` of one ``tiny`` job on dataset ``d0`` (one a100, no training config, no cap).

    Its model is ``m-<job_id>``; ``overrides`` are any other ``UserApp.submit_job`` arguments.
    """
    tiny = {"base_model": "tiny", "dataset_id": "d0", "config": {}, "gpu_type": "a100-80gb", "gpu_count": 1}
    fields = with_defaults({**tiny, "model_id": f"m-{job_id}"}, overrides)
    return str(app.submit_job(job_id=job_id, at=at, **fields))
