"""Every object name in the bucket, and the patterns every key written to a bucket matches.

::

    platform/events/<seq:012d>.json                         platform partition commits
    platform/metadata/{users,gpu_pricing,base_models,position}.json
    users/<uid>/events/<seq:012d>.json                      user partition commits
    users/<uid>/metadata/{user_info,gpu_pricing}.json       the platform partition's views of a user
    users/<uid>/metadata/{jobs,datasets,models,billing,billing_history,position}.json
    users/<uid>/jobs/<job_id>/{config.yml,run.yaml,status.json,job.log,events/metrics.jsonl}
    users/<uid>/jobs/<job_id>/checkpoints/<step>/...
    users/<uid>/data/<dataset_id>/{raw/<filename>,processed/train.jsonl,metadata.json}
    users/<uid>/models/<model_id>/{weights/...,config.json,metadata.json}
    base-models/<name>/...                                  converted base models

A partition (``platform``, ``users/<uid>``) is named by ``domain.partitions`` (the applications
default to its event prefix; re-exported here). The event store also keeps, under a partition's
``events/``, segments (``segments/<seq>.json``, a read cache) and the logs of snapshots and
tracking records (``snapshots/``, ``tracking/<name>/``), each with its own segments.

Names are pure functions of ids; every id passes ``domain.ids.check_id`` first (ValidationFailed).
A ``*_prefix`` is a folder and ends in ``/``. ``PATTERNS`` are the shapes of every key the
platform writes; ``check_key`` names the one a key matches.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from domain.dataset import check_filename
from domain.ids import check_id
from domain.partitions import PLATFORM, PLATFORM_EVENTS, USERS, events_prefix, user_events, user_partition

__all__ = [
    "BASE_MODELS",
    "PATTERNS",
    "PLATFORM",
    "PLATFORM_EVENTS",
    "USERS",
    "KeyPattern",
    "base_model_prefix",
    "base_models",
    "billing",
    "billing_history",
    "check_key",
    "checkpoint_prefix",
    "checkpoints_prefix",
    "dataset_metadata",
    "dataset_prefix",
    "dataset_processed",
    "dataset_processed_prefix",
    "dataset_raw",
    "dataset_raw_prefix",
    "datasets",
    "events_prefix",
    "job_config",
    "job_log",
    "job_metrics",
    "job_prefix",
    "job_run",
    "job_status",
    "jobs",
    "metadata_prefix",
    "model_config",
    "model_metadata",
    "model_prefix",
    "models",
    "platform_views",
    "position",
    "pricing",
    "user_events",
    "user_info",
    "user_of",
    "user_partition",
    "user_pricing",
    "user_views",
    "users",
    "weights_prefix",
]

BASE_MODELS = "base-models/"
"""Where converted base models lie, one folder per catalogue name."""


def user_of(partition: str) -> str:
    """The user id of partition ``users/<user_id>``: ValueError for a name of another kind,
    ValidationFailed for a bad id."""
    kind, _, user_id = partition.partition("/")
    if f"{kind}/" != USERS:
        raise ValueError(f"not a user partition (users/<id>): {partition!r}")
    return check_id(user_id, kind="user_id")


# -- metadata: the views the projector writes ---------------------------------------------


def metadata_prefix(partition: str) -> str:
    """``<partition>/metadata/``: the partition's views (and, for a user, the platform's copies)."""
    return f"{partition}/metadata/"


def position(partition: str) -> str:
    """``<partition>/metadata/position.json``: the head every view of the partition reflects."""
    return f"{partition}/metadata/position.json"


def users() -> str:
    return f"{PLATFORM}/metadata/users.json"


def pricing() -> str:
    """The platform's GPU price list."""
    return f"{PLATFORM}/metadata/gpu_pricing.json"


def base_models() -> str:
    return f"{PLATFORM}/metadata/base_models.json"


def user_info(user_id: str) -> str:
    return f"{user_partition(user_id)}/metadata/user_info.json"


def user_pricing(user_id: str) -> str:
    """A user's copy of the price list."""
    return f"{user_partition(user_id)}/metadata/gpu_pricing.json"


def jobs(user_id: str) -> str:
    return f"{user_partition(user_id)}/metadata/jobs.json"


def datasets(user_id: str) -> str:
    return f"{user_partition(user_id)}/metadata/datasets.json"


def models(user_id: str) -> str:
    return f"{user_partition(user_id)}/metadata/models.json"


def billing(user_id: str) -> str:
    """The current billing month."""
    return f"{user_partition(user_id)}/metadata/billing.json"


def billing_history(user_id: str) -> str:
    """The closed billing months."""
    return f"{user_partition(user_id)}/metadata/billing_history.json"


def platform_views() -> re.Pattern[str]:
    """The views the platform partition writes: its own, and each user's user_info and price copy."""
    return re.compile(
        r"platform/metadata/(users|gpu_pricing|base_models|position)\.json"
        r"|users/[^/]+/metadata/(user_info|gpu_pricing)\.json"
    )


def user_views(partition: str) -> re.Pattern[str]:
    """The views user partition ``partition`` writes."""
    return re.compile(
        re.escape(partition) + r"/(metadata/(jobs|datasets|models|billing|billing_history|position)\.json"
        r"|jobs/[^/]+/status\.json|data/[^/]+/metadata\.json|models/[^/]+/metadata\.json)"
    )


# -- jobs ---------------------------------------------------------------------------------


def job_prefix(user_id: str, job_id: str) -> str:
    """``users/<uid>/jobs/<jid>/``: every object of one job lies under it."""
    return f"{user_partition(user_id)}/jobs/{check_id(job_id, kind='job_id')}/"


def job_config(user_id: str, job_id: str) -> str:
    """The training config as submitted (YAML)."""
    return job_prefix(user_id, job_id) + "config.yml"


def job_run(user_id: str, job_id: str) -> str:
    """The current attempt's run.yaml (``runners.attempt_spec``)."""
    return job_prefix(user_id, job_id) + "run.yaml"


def job_status(user_id: str, job_id: str) -> str:
    """The job's view."""
    return job_prefix(user_id, job_id) + "status.json"


def job_log(user_id: str, job_id: str) -> str:
    return job_prefix(user_id, job_id) + "job.log"


def job_metrics(user_id: str, job_id: str) -> str:
    """Training metrics, one JSON object per line (every attempt appends)."""
    return job_prefix(user_id, job_id) + "events/metrics.jsonl"


def checkpoints_prefix(user_id: str, job_id: str) -> str:
    return job_prefix(user_id, job_id) + "checkpoints/"


def checkpoint_prefix(user_id: str, job_id: str, step: int) -> str:
    """``checkpoints/<step>/``: the resumable state after optimizer step ``step``."""
    return f"{checkpoints_prefix(user_id, job_id)}{step}/"


# -- datasets -----------------------------------------------------------------------------


def dataset_prefix(user_id: str, dataset_id: str) -> str:
    return f"{user_partition(user_id)}/data/{check_id(dataset_id, kind='dataset_id')}/"


def dataset_raw_prefix(user_id: str, dataset_id: str) -> str:
    return dataset_prefix(user_id, dataset_id) + "raw/"


def dataset_raw(user_id: str, dataset_id: str, filename: str) -> str:
    """The upload as it came; ``filename`` must be a plain file name (ValidationFailed)."""
    check_filename(filename)
    return dataset_raw_prefix(user_id, dataset_id) + filename


def dataset_processed_prefix(user_id: str, dataset_id: str) -> str:
    return dataset_prefix(user_id, dataset_id) + "processed/"


def dataset_processed(user_id: str, dataset_id: str) -> str:
    """The validated chat records a job trains on."""
    return dataset_processed_prefix(user_id, dataset_id) + "train.jsonl"


def dataset_metadata(user_id: str, dataset_id: str) -> str:
    """The dataset's view."""
    return dataset_prefix(user_id, dataset_id) + "metadata.json"


# -- models -------------------------------------------------------------------------------


def model_prefix(user_id: str, model_id: str) -> str:
    return f"{user_partition(user_id)}/models/{check_id(model_id, kind='model_id')}/"


def weights_prefix(user_id: str, model_id: str) -> str:
    """The trained adapter or weights, tokenizer and SHA256SUMS."""
    return model_prefix(user_id, model_id) + "weights/"


def model_config(user_id: str, model_id: str) -> str:
    return model_prefix(user_id, model_id) + "config.json"


def model_metadata(user_id: str, model_id: str) -> str:
    """The model's view."""
    return model_prefix(user_id, model_id) + "metadata.json"


def base_model_prefix(name: str) -> str:
    """``base-models/<name>/``: a converted base model (safetensors + tokenizer)."""
    return f"{BASE_MODELS}{check_id(name, kind='base_model')}/"


# -- the patterns every written key matches -------------------------------------------------


class KeyPattern(NamedTuple):
    name: str
    pattern: re.Pattern[str]


_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"  # domain.ids.ID_PATTERN without its anchors
_PARTITION = rf"(?:platform|users/{_ID})"
_USER = rf"users/{_ID}"
_SEQ = r"[0-9]{12}"
_REST = r"[^/]+(?:/[^/]+)*"  # one or more segments (storage.bucket.check_name refuses bad ones)


def _pattern(name: str, regex: str) -> KeyPattern:
    return KeyPattern(name, re.compile(regex))


PATTERNS: tuple[KeyPattern, ...] = (
    _pattern("commit", rf"{_PARTITION}/events/{_SEQ}\.json"),
    _pattern("segment", rf"{_PARTITION}/events/segments/{_SEQ}\.json"),
    _pattern("snapshot", rf"{_PARTITION}/events/snapshots/(?:segments/)?{_SEQ}\.json"),
    _pattern("tracking", rf"{_PARTITION}/events/tracking/(?:{_ID}/)?(?:segments/)?{_SEQ}\.json"),
    _pattern("platform view", r"platform/metadata/(?:users|gpu_pricing|base_models|position)\.json"),
    _pattern(
        "user view",
        rf"{_USER}/metadata/(?:user_info|gpu_pricing|jobs|datasets|models|billing|billing_history"
        r"|position)\.json",
    ),
    _pattern("job file", rf"{_USER}/jobs/{_ID}/(?:config\.yml|run\.yaml|status\.json|job\.log"
                         r"|events/metrics\.jsonl)"),
    _pattern("checkpoint", rf"{_USER}/jobs/{_ID}/checkpoints/[0-9]+/{_REST}"),
    _pattern("dataset file", rf"{_USER}/data/{_ID}/(?:raw/[^/]+|processed/train\.jsonl|metadata\.json)"),
    _pattern("model file", rf"{_USER}/models/{_ID}/(?:weights/{_REST}|config\.json|metadata\.json)"),
    _pattern("base model", rf"base-models/{_ID}/{_REST}"),
)
"""The shape of every key written to a bucket, by name (``check_key``)."""


def check_key(key: str) -> str:
    """The name of the pattern ``key`` matches; ValueError if it matches none."""
    for name, pattern in PATTERNS:
        if pattern.fullmatch(key):
            return name
    raise ValueError(f"not a name of the bucket layout (storage.layout): {key!r:.200}")
