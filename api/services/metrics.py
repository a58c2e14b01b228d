"""A job's loss curves, from the ``metrics.jsonl`` objects its attempts write.

The job runner appends one JSON object a line to ``attempts/<n>/metrics.jsonl`` (a job run before
attempts had prefixes: ``events/metrics.jsonl``): ``{"event": "step", step, total_steps, epoch,
loss, tokens, attempt, at}`` after each optimizer step and ``{"event": "eval", step, eval_loss,
attempt, at}`` after each evaluation. ``MetricsReader`` reads what was appended since its last
read (complete lines only: a line still being written is read next time), so a live page asks the
bucket only for the new bytes; ``Curves`` folds the records into one train and one eval series by
step, a later attempt's value replacing an earlier one's at the same step (it resumed from an
earlier checkpoint and ran those steps again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from api import schemas
from api.services.base import UserService
from api.services.jobs import JobService
from storage import Bucket, ObjectNotFound, layout

__all__ = ["Curves", "MetricsReader", "MetricsService"]

_READ_AT_MOST = 4 << 20
"""The most bytes of one object a read takes (the rest comes with the next read)."""


class MetricsReader:
    """Reads a job's metrics objects incrementally: each ``read`` returns the records appended since
    the previous one (the first: all of them so far)."""

    def __init__(self, bucket: Bucket, user_id: str, job_id: str) -> None:
        self.bucket, self.user_id, self.job_id = bucket, user_id, job_id
        self.offsets: dict[str, int] = {}

    def names(self, attempts: int) -> list[str]:
        """The job's metrics objects, in the order they were written."""
        return [
            layout.job_metrics(self.user_id, self.job_id),
            *(layout.attempt_metrics(self.user_id, self.job_id, n) for n in range(1, attempts + 1)),
        ]

    def read(self, attempts: int) -> list[dict[str, Any]]:
        """The records appended to the objects of ``attempts`` attempts since the last read."""
        records: list[dict[str, Any]] = []
        for name in self.names(attempts):
            data = self._new_bytes(name)
            end = data.rfind(b"\n") + 1  # a line being written now is read next time, whole
            self.offsets[name] = self.offsets.get(name, 0) + end
            for line in data[:end].splitlines():
                try:
                    record = msgspec.json.decode(line)
                except msgspec.DecodeError:  # a line cut short by an attempt that died mid-write
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def _new_bytes(self, name: str) -> bytes:
        offset = self.offsets.get(name, 0)
        try:
            fh = self.bucket.open_read(name)
        except ObjectNotFound:
            return b""
        with fh:
            if offset:
                if fh.seek(0, 2) <= offset:
                    return b""
                fh.seek(offset)
            return fh.read(_READ_AT_MOST)  # type: ignore[no-any-return]


def metric_point(record: dict[str, Any]) -> schemas.MetricPoint | None:
    """The point a metrics record holds, or None for a record that is no step or eval point."""
    step, attempt = record.get("step"), record.get("attempt", 0)
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(attempt, int):
        return None
    loss, eval_loss = _number(record.get("loss")), _number(record.get("eval_loss"))
    if loss is None and eval_loss is None:
        return None
    tokens = record.get("tokens")
    return schemas.MetricPoint(
        step=step,
        attempt=attempt,
        at=record.get("at") if isinstance(record.get("at"), str) else None,
        loss=loss,
        eval_loss=eval_loss,
        epoch=_number(record.get("epoch")),
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Curves:
    """A job's train and eval series by step (a later attempt's point replaces an earlier one's)."""

    def __init__(self) -> None:
        self.train: dict[int, schemas.MetricPoint] = {}
        self.eval: dict[int, schemas.MetricPoint] = {}

    def add(self, records: Iterable[dict[str, Any]]) -> list[schemas.MetricPoint]:
        """Fold ``records`` in; the points that changed a series, in the order they came."""
        changed = []
        for record in records:
            point = metric_point(record)
            if point is None:
                continue
            series = self.train if point.loss is not None else self.eval
            held = series.get(point.step)
            if held is None or held.attempt <= point.attempt:
                series[point.step] = point
                changed.append(point)
        return changed

    def reply(self, job_id: str, after_step: int | None = None) -> schemas.JobMetrics:
        """The series as a reply: every point, or those after ``after_step``."""
        first = -1 if after_step is None else after_step
        return schemas.JobMetrics(
            job_id=job_id,
            train=[self.train[s] for s in sorted(self.train) if s > first],
            eval=[self.eval[s] for s in sorted(self.eval) if s > first],
            last_step=max((*self.train, *self.eval), default=0),
        )


class MetricsService(UserService):
    """The caller's jobs' loss curves."""

    def metrics(self, job_id: str, after_step: int | None = None) -> schemas.JobMetrics:
        """The job's curves (``after_step``: only the points after it); NotFound unless it is the caller's."""
        status = JobService(self.rt, self.user_id).status(job_id)
        curves = Curves()
        curves.add(self.reader(job_id).read(status.attempt))
        return curves.reply(job_id, after_step)

    def reader(self, job_id: str) -> MetricsReader:
        return MetricsReader(self.rt.bucket, self.user_id, job_id)
