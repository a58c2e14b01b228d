"""The attempt spec: ``users/<uid>/jobs/<jid>/run.yaml``, one attempt of one job, as the dispatcher
hands it to a job runner (not the trainer's run spec, ``runners.trainer.run_spec``).

This run.yaml names bucket objects; the job runner copies them into a working folder and
writes the trainer's own, local run.yaml (``runners.trainer.run_spec.RunSpec``) from it.
The dispatcher rewrites it before every attempt::

    job_id: job_3f2a...
    user_id: usr_...
    attempt: 2                      # 1 for the first run, +1 per retry
    model_id: model_...             # the model a success registers
    base_model: tiny-llama          # a catalogue name (bucket: base-models/<name>/)
    base_model_source: null         # where an operator-added base model comes from
    dataset_id: ds_...              # users/<uid>/data/<id>/processed/train.jsonl
    gpu_type: cpu                   # as submitted
    gpu_count: 1
    lease: 9f86d081884c7d65         # the attempt's fencing lease (in Started; every report has it)
    placement: {gpu_type: cpu, gpu_count: 1, node: local}   # where the backend placed it (billed by it)
    heartbeat_interval_s: 10.0
    heartbeat_url: "stdout:"        # see runners.heartbeat_relay
    max_retries: 2                  # attempts after the first one
    max_cost_usd_micros: null       # the job's budget (the ledger enforces it)
    resume_from: users/<uid>/jobs/<jid>/attempts/1/checkpoints/40/   # an earlier attempt's, or null
    start_from: users/<uid>/models/<mid>/weights/   # weights to start from (a checkpoint or model
                                    # of the user's) while the job has no checkpoint of its own, or null
    config: {...}                   # the whole TrainingConfig

Object names (the contract's layout) are the spec's properties, taken from ``storage.layout``: an
attempt writes its log, metrics and checkpoints under ``jobs/<jid>/attempts/<n>/`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import yaml

from domain.errors import ValidationFailed
from domain.ids import check_id
from domain.placement import Placement
from domain.read_models import JobView
from domain.training_config import TrainingConfig, parse_training_config
from runners.base_models import BaseModelSource
from runners.heartbeat_relay import STDOUT_URL
from runners.trainer.run_spec import parse_run_yaml
from storage import Bucket, ObjectNotFound, layout

__all__ = [
    "JobRunSpec",
    "build_attempt_spec",
    "dump_job_run",
    "parse_job_run",
    "read_job_run",
    "write_job_run",
]

_Positive = Annotated[int, msgspec.Meta(ge=1)]


class _Name:
    """A read-only attribute of a spec: the ``storage.layout`` name ``name_of`` gives its ``ids``."""

    def __init__(self, name_of: Callable[..., str], *ids: str) -> None:
        self.name_of = name_of
        self.ids = ids

    def __get__(self, spec: object, owner: type | None = None) -> str:
        return self.name_of(*(getattr(spec, i) for i in self.ids))


class JobRunSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One attempt of one job, in bucket terms (see the module docstring)."""

    job_id: str
    user_id: str
    attempt: _Positive
    model_id: str
    base_model: str
    dataset_id: str
    gpu_type: str
    gpu_count: _Positive
    config: TrainingConfig = msgspec.field(default_factory=TrainingConfig)
    heartbeat_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    heartbeat_url: str = STDOUT_URL
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 2
    max_cost_usd_micros: int | None = None
    resume_from: str | None = None
    base_model_source: BaseModelSource | None = None
    lease: str | None = None
    """The attempt's fencing lease, made by the dispatcher (None: a run.yaml from before leases)."""
    placement: Placement | None = None
    """Where the launch backend placed the attempt (None: a run.yaml from before placements)."""
    start_from: str | None = None
    """A folder of the user's (a checkpoint of one of their jobs, or a model's weights) whose weights
    the attempt starts from; set only while the job has no checkpoint of its own (``resume_from``)."""

    def __post_init__(self) -> None:
        for kind in ("job_id", "user_id", "model_id", "base_model", "dataset_id"):
            check_id(getattr(self, kind), kind=kind)
        if self.resume_from is not None:
            found = layout.attempt_of_checkpoint(self.user_id, self.job_id, self.resume_from)
            if found is None or found[0] >= self.attempt:
                raise ValidationFailed(
                    f"resume_from must be a checkpoint folder of an earlier attempt of the job, under"
                    f" {self.job_prefix}attempts/<n>/checkpoints/ (got {self.resume_from!r:.120})",
                    where="resume_from",
                )
        if self.start_from is not None:
            user = layout.user_partition(self.user_id) + "/"
            if self.resume_from is not None or not _is_user_folder(self.start_from, user):
                raise ValidationFailed(
                    f"start_from must be a folder under {user} of an attempt that does not resume"
                    f" (got {self.start_from!r:.120})",
                    where="start_from",
                )

    # ---- object names (``storage.layout``, of the spec's ids) ----

    job_prefix = _Name(layout.job_prefix, "user_id", "job_id")
    run_object = _Name(layout.job_run, "user_id", "job_id")
    # what this attempt writes lies under its own ``attempts/<n>/`` (the job's other attempts' never)
    log_object = _Name(layout.attempt_log, "user_id", "job_id", "attempt")
    metrics_object = _Name(layout.attempt_metrics, "user_id", "job_id", "attempt")
    checkpoints_prefix = _Name(layout.attempt_checkpoints_prefix, "user_id", "job_id", "attempt")
    unsent_heartbeats_object = _Name(layout.unsent_heartbeats, "user_id", "job_id", "attempt")
    dataset_object = _Name(layout.dataset_processed, "user_id", "dataset_id")
    model_prefix = _Name(layout.model_prefix, "user_id", "model_id")
    weights_prefix = _Name(layout.weights_prefix, "user_id", "model_id")
    model_config_object = _Name(layout.model_config, "user_id", "model_id")
    base_model_prefix = _Name(layout.base_model_prefix, "base_model")

    def checkpoint_prefix(self, step: int) -> str:
        """``attempts/<n>/checkpoints/<step>/``: the resumable state after optimizer step ``step``."""
        return layout.attempt_checkpoint_prefix(self.user_id, self.job_id, self.attempt, step)

    @property
    def placed(self) -> Placement:
        """Where the attempt runs: its placement, else (an older run.yaml) the submitted hardware."""
        if self.placement is not None:
            return self.placement
        return Placement(gpu_type=self.gpu_type, gpu_count=self.gpu_count)

    @property
    def model_kind(self) -> str:
        """``lora`` (an adapter) or ``full`` (all weights)."""
        return self.config.method


def build_attempt_spec(
    job: JobView,
    *,
    attempt: int,
    heartbeat_url: str = STDOUT_URL,
    base_model_source: BaseModelSource | None = None,
    lease: str | None = None,
    placement: Placement | None = None,
) -> JobRunSpec:
    """The run.yaml of ``attempt`` of ``job`` under ``lease`` on ``placement``, resuming from its last
    checkpoint when there is one, else starting from the weights the job was submitted to start from."""
    config = parse_training_config(job.config)
    checkpoint = job.last_checkpoint
    start = job.start_from if checkpoint is None else None
    return JobRunSpec(
        job_id=job.job_id,
        user_id=job.user_id,
        attempt=attempt,
        model_id=job.model_id,
        base_model=job.base_model,
        dataset_id=job.dataset_id,
        gpu_type=job.gpu_type,
        gpu_count=job.gpu_count,
        config=config,
        heartbeat_interval_s=config.heartbeat_interval_seconds,
        heartbeat_url=heartbeat_url,
        max_retries=config.max_retries,
        max_cost_usd_micros=job.max_cost_usd_micros,
        resume_from=None if checkpoint is None else checkpoint.path,
        base_model_source=base_model_source,
        lease=lease,
        placement=placement,
        start_from=None if start is None else start["path"],
    )


def _is_user_folder(prefix: str, user: str) -> bool:
    parts = prefix.split("/")
    return prefix.startswith(user) and prefix.endswith("/") and not {"", ".", ".."} & set(parts[:-1])


def parse_job_run(data: Any) -> JobRunSpec:
    """Check a run.yaml mapping; ValidationFailed names what is wrong (``config.*`` keys all at once)."""
    return parse_run_yaml(data, JobRunSpec)


def dump_job_run(spec: JobRunSpec) -> bytes:
    """The spec as YAML (the config with every key)."""
    return yaml.safe_dump(msgspec.to_builtins(spec), sort_keys=False).encode()


def read_job_run(bucket: Bucket, name: str) -> JobRunSpec:
    """Load and check the run.yaml object ``name``."""
    try:
        data = yaml.safe_load(bucket.read(name))
    except ObjectNotFound:
        raise ValidationFailed(f"no run.yaml at {name}", where="run.yaml") from None
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{name} is not valid YAML: {exc}", where="run.yaml") from exc
    return parse_job_run(data)


def write_job_run(bucket: Bucket, spec: JobRunSpec) -> str:
    """Write ``spec`` to its run.yaml object; return the object's name."""
    bucket.write(spec.run_object, dump_job_run(spec))
    return spec.run_object
