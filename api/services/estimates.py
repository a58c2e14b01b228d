"""The evidence a job's estimate is priced from: the caller's own earlier jobs (``domain.estimate``).

A finished job is evidence for a new one when it ran on the same base model, GPU type and count
with the same method, succeeded in its first attempt (a resumed job's training time covers only
its last attempt), and its view says what it took: its metrics' ``train_seconds`` and its billed
``gpu_ms``. What it trained is counted in the unit the new estimate counts in (``plan_workload``
on its own config and dataset: the dataset's estimated tokens as ``compute_tokens``, its
objective's cost and its evaluations included, so the estimate's bias per dataset format cancels
and a job of either objective, with or without a validation set, prices the other), in the share
of its planned steps it trained (an early-stopped job trained fewer: counting its whole plan would
make the pace look faster than it was); where its
dataset is gone, the tokens its trainer reported stand in.
Jobs of the same ``max_seq_length`` bucket (a power of two: per-token time grows with the
sequence) come first, then the newest; at most ``SAMPLES`` are used.

Only the caller's own jobs are read: what the platform learns from one user's jobs is never shown
to another (a platform-wide table of throughput, without identifiers, is ``domain.estimate``'s
``CALIBRATION``).
"""

from __future__ import annotations

from typing import Any

from api import schemas
from api.services.base import UserService
from api.services.pages import Pages
from domain.config_yaml import config_from_yaml
from domain.errors import ValidationFailed
from domain.estimate import Estimate, Measurement, estimate_job, plan_workload
from domain.training_config import TrainingConfig, parse_training_config
from projections.index import Query
from storage import ObjectNotFound, layout

__all__ = ["CANDIDATES", "SAMPLES", "EstimateService"]

SAMPLES = 3
"""Earlier jobs an estimate is made from, at most."""
CANDIDATES = 20
"""Succeeded jobs on the base model looked at (newest first) to find them."""


class EstimateService(UserService):
    """Estimates the caller's jobs from the caller's finished ones."""

    def estimate(
        self,
        config: TrainingConfig,
        base_model: str,
        dataset: schemas.Dataset,
        usd_micros_per_hour: int,
        pages: Pages,
    ) -> Estimate:
        """The estimate of ``config`` on ``dataset``; ``pages``: the caller's jobs listing."""
        return estimate_job(
            config,
            dataset.stats,
            dataset.rows,
            usd_micros_per_hour,
            base_model=base_model,
            evidence=self.evidence(config, base_model, pages),
            validation=self._validation_stats(config),
        )

    def _validation_stats(self, config: TrainingConfig) -> dict[str, Any] | None:
        """The stats of the config's validation dataset (None without one, or once it is gone)."""
        if config.validation_dataset_id is None:
            return None
        found = self.rt.view_json(layout.dataset_metadata(self.user_id, config.validation_dataset_id))
        return (found or {}).get("stats")

    def evidence(self, config: TrainingConfig, base_model: str, pages: Pages) -> list[Measurement]:
        """What the caller's earlier jobs like this one took (see the module docstring)."""
        rows = pages.select(Query(limit=CANDIDATES, state="succeeded", base_model=base_model)).rows
        found: list[tuple[bool, Measurement]] = []
        for row in rows:
            if row.gpu_type != config.gpu_type or row.gpu_count != config.gpu_count:
                continue
            measured = self.measured(row.job_id)
            if measured is not None and measured[0].method == config.method:
                same_bucket = _bucket(measured[0].max_seq_length) == _bucket(config.max_seq_length)
                found.append((same_bucket, measured[1]))
        found.sort(key=lambda item: not item[0])  # the same bucket first; stable: newest first within
        return [measurement for _, measurement in found[:SAMPLES]]

    def measured(self, job_id: str) -> tuple[TrainingConfig, Measurement] | None:
        """(its config, what it took) of one of the caller's jobs, or None if it is no evidence: not
        succeeded in its first attempt, or its training time, billed time or tokens unknown."""
        status = self.rt.view_json(layout.job_status(self.user_id, job_id))
        config = self._config(job_id)
        if status is None or config is None or status.get("status") != "succeeded":
            return None
        if status.get("attempt") != 1:
            return None
        metrics: dict[str, Any] = status.get("metrics") or {}
        train_ms = round(float(metrics.get("train_seconds") or 0) * 1000)
        billed_ms = int((status.get("gpu_metrics") or {}).get("gpu_ms") or 0)
        if train_ms <= 0 or billed_ms <= 0:
            return None
        dataset = self.rt.view_json(layout.dataset_metadata(self.user_id, status.get("dataset_id") or ""))
        if dataset is not None and dataset.get("stats"):
            planned = plan_workload(
                config, dataset.get("stats"), dataset.get("rows"), validation=self._validation_stats(config)
            )
            trained = int(metrics.get("steps") or planned.steps)
            tokens = planned.compute_tokens * min(trained, planned.steps) // max(planned.steps, 1)
        else:
            tokens = int(metrics.get("tokens") or 0)
        if tokens <= 0:
            return None
        return config, Measurement(tokens=tokens, train_ms=train_ms, overhead_ms=max(billed_ms - train_ms, 0))

    def _config(self, job_id: str) -> TrainingConfig | None:
        try:
            text = self.rt.bucket.read(layout.job_config(self.user_id, job_id))
            raw = config_from_yaml(text, where="config", at_line=lambda n: f"line {n}")
            return parse_training_config(raw)
        except (ObjectNotFound, ValidationFailed, UnicodeDecodeError):
            return None


def _bucket(max_seq_length: int) -> int:
    return max_seq_length.bit_length()
