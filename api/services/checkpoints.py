"""A job's checkpoints: listed with the losses at their step, and found by their id to start from.

A checkpoint's id is ``<job_id>:<step>`` (``<job_id>`` alone: the job's latest checkpoint). The
list comes from the job's view (``CheckpointSaved`` events, every attempt's); the losses from each
attempt's ``metrics.jsonl`` (a job run before attempts had prefixes: its ``events/metrics.jsonl``);
whether one can still be used from the bucket (a job keeps only its latest checkpoints).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from api import schemas
from domain.errors import NotFound, ValidationFailed
from domain.ids import check_id
from storage import Bucket, ObjectNotFound, layout

__all__ = [
    "CHECKPOINT_SEPARATOR",
    "Losses",
    "checkpoint_list",
    "job_metric_records",
    "parse_checkpoint_ref",
    "pick_checkpoint",
]

CHECKPOINT_SEPARATOR = ":"


class Losses:
    """Train and eval losses of a job by ``(attempt, step)``, read from its metrics objects."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.train: dict[tuple[int, int], float] = {}
        self.eval: dict[tuple[int, int], float] = {}
        for record in records:
            step, attempt = record.get("step"), record.get("attempt", 0)
            if not isinstance(step, int) or not isinstance(attempt, int):
                continue
            if isinstance(record.get("loss"), int | float):
                self.train[(attempt, step)] = float(record["loss"])
            if isinstance(record.get("eval_loss"), int | float):
                self.eval[(attempt, step)] = float(record["eval_loss"])

    def at(self, attempt: int, step: int) -> tuple[float | None, float | None]:
        """(train, eval) loss at ``step`` as ``attempt`` logged it, else as the latest attempt that did."""
        return _find(self.train, attempt, step), _find(self.eval, attempt, step)


def _find(losses: dict[tuple[int, int], float], attempt: int, step: int) -> float | None:
    if (attempt, step) in losses:
        return losses[(attempt, step)]
    found = [value for (a, s), value in sorted(losses.items()) if s == step]
    return found[-1] if found else None


def job_metric_records(bucket: Bucket, user_id: str, status: schemas.JobStatus) -> Iterator[dict[str, Any]]:
    """The records of every ``metrics.jsonl`` of the job whose view is ``status``, attempt by attempt
    (``step`` and ``eval`` records: ``runners.trainer.events``, with ``attempt`` and ``at``)."""
    names = [layout.job_metrics(user_id, status.job_id)]
    names += [layout.attempt_metrics(user_id, status.job_id, n) for n in range(1, status.attempt + 1)]
    return _metric_records(bucket, names)


def _metric_records(bucket: Bucket, names: Iterable[str]) -> Iterator[dict[str, Any]]:
    for name in names:
        try:
            data = bucket.read(name)
        except ObjectNotFound:
            continue
        for line in data.splitlines():
            try:
                record = msgspec.json.decode(line)
            except msgspec.DecodeError:  # a line cut short by an attempt that died mid-write
                continue
            if isinstance(record, dict):
                yield record


def _stored_folders(bucket: Bucket, user_id: str, job_id: str) -> set[str]:
    """The checkpoint folders of the job that still hold objects."""
    job = layout.job_prefix(user_id, job_id)
    found: set[str] = set()
    for prefix in (layout.attempts_prefix(user_id, job_id), layout.checkpoints_prefix(user_id, job_id)):
        for name in bucket.list(prefix):
            parts = name[len(job) :].split("/")
            found.add(job + "/".join(parts[:4] if parts[0] == "attempts" else parts[:2]) + "/")
    return found


def checkpoint_list(bucket: Bucket, user_id: str, status: schemas.JobStatus) -> schemas.CheckpointList:
    """The checkpoints of the job whose view is ``status``, oldest first (a step saved again by a
    later attempt: only the later one)."""
    job_id = status.job_id
    losses = Losses(job_metric_records(bucket, user_id, status))
    stored = _stored_folders(bucket, user_id, job_id) if status.checkpoints else set()
    latest = {point.step: point for point in status.checkpoints}  # a later attempt's replaces
    rows = []
    for point in sorted(latest.values(), key=lambda p: (p.attempt, p.step)):
        train, evaluation = losses.at(point.attempt, point.step)
        rows.append(
            schemas.CheckpointInfo(
                checkpoint_id=f"{job_id}{CHECKPOINT_SEPARATOR}{point.step}",
                attempt=point.attempt,
                step=point.step,
                at=point.at,
                train_loss=train,
                eval_loss=evaluation,
                available=_folder(point.path) in stored,
            )
        )
    return schemas.CheckpointList(job_id=job_id, checkpoints=rows)


def _folder(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def parse_checkpoint_ref(ref: str) -> tuple[str, int | None]:
    """``<job_id>:<step>`` -> (job_id, step); ``<job_id>`` -> (job_id, None: its latest)."""
    job_id, sep, step = ref.partition(CHECKPOINT_SEPARATOR)
    check_id(job_id, kind="start_from")
    if not sep:
        return job_id, None
    if not step.isdigit() or len(step) > 12:
        raise ValidationFailed(f"a checkpoint id is <job_id>:<step> (got {ref!r:.80})", where="start_from")
    return job_id, int(step)


def pick_checkpoint(
    listing: schemas.CheckpointList, status: schemas.JobStatus, step: int | None
) -> tuple[schemas.CheckpointInfo, str]:
    """The checkpoint at ``step`` (None: the latest) that can still be used, and its folder;
    NotFound naming what exists otherwise."""
    usable = [c for c in listing.checkpoints if c.available]
    chosen = usable[-1] if step is None and usable else next((c for c in usable if c.step == step), None)
    if chosen is None:
        steps = ", ".join(str(c.step) for c in usable) or "none"
        wanted = "any checkpoint" if step is None else f"a checkpoint at step {step}"
        raise NotFound(
            f"job {listing.job_id} has no {wanted} to start from (usable steps: {steps})",
            where="start_from",
        )
    path = next(
        p.path for p in reversed(status.checkpoints) if p.step == chosen.step and p.attempt == chosen.attempt
    )
    return chosen, _folder(path)
