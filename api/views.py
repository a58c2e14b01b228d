"""Where each view lives in the bucket, by id (the seed's layout; see ``projections``).

Ids are checked (``domain.ids.check_id``) before they form a name.
"""

from __future__ import annotations

from domain.ids import check_id
from projections.partition import PLATFORM

__all__ = [
    "base_models",
    "billing",
    "billing_history",
    "dataset",
    "dataset_dir",
    "datasets",
    "job_dir",
    "job_status",
    "jobs",
    "model",
    "model_dir",
    "models",
    "pricing",
    "user_info",
    "user_root",
    "users",
]


def user_root(user_id: str) -> str:
    return f"users/{check_id(user_id, kind='user_id')}"


def user_info(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/user_info.json"


def jobs(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/jobs.json"


def job_dir(user_id: str, job_id: str) -> str:
    return f"{user_root(user_id)}/jobs/{check_id(job_id, kind='job_id')}"


def job_status(user_id: str, job_id: str) -> str:
    return f"{job_dir(user_id, job_id)}/status.json"


def datasets(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/datasets.json"


def dataset_dir(user_id: str, dataset_id: str) -> str:
    return f"{user_root(user_id)}/data/{check_id(dataset_id, kind='dataset_id')}"


def dataset(user_id: str, dataset_id: str) -> str:
    return f"{dataset_dir(user_id, dataset_id)}/metadata.json"


def models(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/models.json"


def model_dir(user_id: str, model_id: str) -> str:
    return f"{user_root(user_id)}/models/{check_id(model_id, kind='model_id')}"


def model(user_id: str, model_id: str) -> str:
    return f"{model_dir(user_id, model_id)}/metadata.json"


def billing(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/billing.json"


def billing_history(user_id: str) -> str:
    return f"{user_root(user_id)}/metadata/billing_history.json"


def pricing() -> str:
    return f"{PLATFORM}/metadata/gpu_pricing.json"


def users() -> str:
    return f"{PLATFORM}/metadata/users.json"


def base_models() -> str:
    return f"{PLATFORM}/metadata/base_models.json"
