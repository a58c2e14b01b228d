"""Every object name in the bucket, and the patterns every key written to a bucket matches.

::

    platform/events/<seq:012d>.json                         platform partition commits
    platform/metadata/{users,gpu_pricing,base_models,hardware,position}.json
    users/<uid>/events/<seq:012d>.json                      user partition commits
    users/<uid>/metadata/{user_info,gpu_pricing}.json       the platform partition's views of a user
    users/<uid>/metadata/{jobs,datasets,models,billing,billing_history,position}.json
    users/<uid>/metadata/index/{jobs,datasets,models}/{head,<page:06d>}.json   the listings, paged
    users/<uid>/jobs/<job_id>/{config.yml,openai.json,run.yaml,status.json}
    users/<uid>/jobs/<job_id>/attempts/<n>/{job.log,metrics.jsonl}   what attempt n wrote
    users/<uid>/jobs/<job_id>/attempts/<n>/checkpoints/<step>/...
    users/<uid>/jobs/<job_id>/{job.log,events/metrics.jsonl}        (older jobs: every attempt's)
    users/<uid>/jobs/<job_id>/checkpoints/<step>/...                (older jobs: every attempt's)
    users/<uid>/unsent-heartbeats/<job_id>/<n>.jsonl        heartbeats attempt n could not deliver
    users/<uid>/data/<dataset_id>/{raw/<filename>,processed/train.jsonl,metadata.json}
    users/<uid>/models/<model_id>/{weights/...,config.json,metadata.json}
    users/<uid>/heartbeats/<yyyymmdd>/<hhmmssffffff>.<sha16>.jsonl   the ledger's raw heartbeats, a batch's
    users/<uid>/heartbeats/<job_id>/<attempt>/<first>-<last>.<sha16>.jsonl   (older: an attempt's)
    base-models/<name>/...                                  converted base models
    <partition>/writers/<key_id>.json                       the relay's lease: who commits the others' batches
    platform/keyring/<key_id>.json                          the event store's public keys, root-signed
    witness/<partition>/<seq:012d>.json                     witnessed heads (in the TUNE_WITNESS bucket)

A partition (``platform``, ``users/<uid>``) is named by ``domain.partitions`` (the applications
default to its event prefix; re-exported here). The event store also keeps, under a partition's
``events/``, segments (``segments/<seq>.json``, a read cache), log indexes (``indexes/<seq>.json``,
for warm starts: ``storage.eventstore.log_index``) and the logs of snapshots and
tracking records (``snapshots/``, ``tracking/<name>/``), each with its own segments.

Names are pure functions of ids; every id passes ``domain.ids.check_id`` first (ValidationFailed).
A ``*_prefix`` is a folder and ends in ``/``. ``PATTERNS`` are the shapes of every key the
platform writes; ``check_key`` names the one a key matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from domain.dataset import check_filename
from domain.errors import ValidationFailed
from domain.ids import check_id
from domain.partitions import PLATFORM, PLATFORM_EVENTS, USERS, events_prefix, user_events, user_partition

__all__ = [
    "BASE_MODELS",
    "BASE_MODEL_MARKER",
    "INDEXED",
    "PATTERNS",
    "PLATFORM",
    "PLATFORM_EVENTS",
    "PLATFORM_VIEWS",
    "USERS",
    "USER_COPIES",
    "USER_VIEWS",
    "KeyPattern",
    "attempt_checkpoint_prefix",
    "attempt_checkpoints_prefix",
    "attempt_log",
    "attempt_metrics",
    "attempt_of_checkpoint",
    "attempt_prefix",
    "attempts_prefix",
    "base_model_marker",
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
    "hardware",
    "heartbeat_archive",
    "heartbeat_batch",
    "heartbeats_prefix",
    "index_head",
    "index_page",
    "index_prefix",
    "job_config",
    "job_log",
    "job_metrics",
    "job_openai",
    "job_prefix",
    "job_run",
    "job_status",
    "jobs",
    "keyring_entry",
    "keyring_prefix",
    "metadata_prefix",
    "model_config",
    "model_metadata",
    "model_prefix",
    "models",
    "partition_of_commit",
    "platform_views",
    "position",
    "pricing",
    "relay_lease",
    "unsent_heartbeats",
    "unsent_heartbeats_prefix",
    "user_events",
    "user_info",
    "user_of",
    "user_partition",
    "user_pricing",
    "user_views",
    "users",
    "weights_prefix",
    "witness_head",
    "witness_prefix",
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


def partition_of_commit(name: str) -> str | None:
    """The partition whose event store holds object ``name`` (a commit, a segment: anything under
    ``<partition>/events/``), or None for any other object (views, logs, checkpoints)."""
    if name.startswith(PLATFORM_EVENTS):
        return PLATFORM
    kind, _, rest = name.partition("/")
    user_id, _, tail = rest.partition("/")
    if f"{kind}/" != USERS or not user_id or not tail.startswith("events/"):
        return None
    try:
        return user_partition(check_id(user_id, kind="user_id"))
    except ValidationFailed:
        return None


# -- metadata: the views the projector writes ---------------------------------------------

PLATFORM_VIEWS = ("users", "gpu_pricing", "base_models", "hardware", "position")
"""The platform partition's own views: ``platform/metadata/<view>.json``."""

USER_COPIES = ("user_info", "gpu_pricing")
"""The platform partition's views of each user: ``users/<uid>/metadata/<view>.json``."""

USER_VIEWS = ("jobs", "datasets", "models", "billing", "billing_history", "position")
"""A user partition's own views: ``users/<uid>/metadata/<view>.json``."""


def metadata_prefix(partition: str) -> str:
    """``<partition>/metadata/``: the partition's views (and, for a user, the platform's copies)."""
    return f"{partition}/metadata/"


def _view(partition: str, view: str) -> str:
    return f"{metadata_prefix(partition)}{view}.json"


def _user_view(view: str, doc: str | None = None) -> Callable[[str], str]:
    """The name function of a view in ``users/<uid>/metadata/``."""

    def name(user_id: str) -> str:
        return _view(user_partition(user_id), view)

    name.__doc__ = doc
    return name


def position(partition: str) -> str:
    """``<partition>/metadata/position.json``: the head every view of the partition reflects."""
    return _view(partition, "position")


def users() -> str:
    return _view(PLATFORM, "users")


def pricing() -> str:
    """The platform's GPU price list."""
    return _view(PLATFORM, "gpu_pricing")


def base_models() -> str:
    return _view(PLATFORM, "base_models")


def hardware() -> str:
    """What the launch backends offer (``domain.hardware``; none before the first offer)."""
    return _view(PLATFORM, "hardware")


user_info = _user_view("user_info")
user_pricing = _user_view("gpu_pricing", "A user's copy of the price list.")
jobs = _user_view("jobs")
datasets = _user_view("datasets")
models = _user_view("models")
billing = _user_view("billing", "The current billing month.")
billing_history = _user_view("billing_history", "The closed billing months.")


INDEXED = ("jobs", "datasets", "models")
"""The listings also kept as a paged index (``index_head``, ``index_page``): what the API serves."""


def index_prefix(user_id: str, listing: str) -> str:
    """``users/<uid>/metadata/index/<listing>/``: the paged index of a listing (one of ``INDEXED``).

    The complete listing (``jobs.json`` ...) is the documented copy, rewritten at most once per
    interval; the index is what the API pages through, updated per changed item: rows in pages of
    a fixed number of entities by order of arrival (an entity keeps its page), and a head that
    summarises each page (count, first and last sort key, counts by state and base model), so a
    query reads only the pages that can hold what it asks for.
    """
    if listing not in INDEXED:
        raise ValueError(f"not an indexed listing: {listing!r}")
    return f"{metadata_prefix(user_partition(user_id))}index/{listing}/"


def index_head(user_id: str, listing: str) -> str:
    """``.../index/<listing>/head.json``: the summary of every page (written after the pages)."""
    return f"{index_prefix(user_id, listing)}head.json"


def index_page(user_id: str, listing: str, page: int) -> str:
    """``.../index/<listing>/<page:06d>.json``: the rows of one page, oldest first."""
    if page < 0:
        raise ValueError(f"page {page} < 0")
    return f"{index_prefix(user_id, listing)}{page:06d}.json"


def _one_of(names: tuple[str, ...]) -> str:
    return "|".join(names)


def platform_views() -> re.Pattern[str]:
    """The views the platform partition writes: its own, and each user's user_info and price copy."""
    return re.compile(
        rf"platform/metadata/({_one_of(PLATFORM_VIEWS)})\.json"
        rf"|users/[^/]+/metadata/({_one_of(USER_COPIES)})\.json"
    )


def user_views(partition: str) -> re.Pattern[str]:
    """The views user partition ``partition`` writes."""
    return re.compile(
        re.escape(partition) + rf"/(metadata/({_one_of(USER_VIEWS)})\.json"
        r"|jobs/[^/]+/status\.json|data/[^/]+/metadata\.json|models/[^/]+/metadata\.json)"
    )


# -- objects in a folder of one job, dataset or model ----------------------------------------


def _in(folder: Callable[[str, str], str], rest: str, doc: str | None = None) -> Callable[[str, str], str]:
    """The name function of ``rest`` inside ``folder(user_id, id)``."""

    def name(user_id: str, object_id: str) -> str:
        return folder(user_id, object_id) + rest

    name.__doc__ = doc
    return name


# -- jobs ---------------------------------------------------------------------------------


def job_prefix(user_id: str, job_id: str) -> str:
    """``users/<uid>/jobs/<jid>/``: every object of one job lies under it."""
    return f"{user_partition(user_id)}/jobs/{check_id(job_id, kind='job_id')}/"


job_config = _in(job_prefix, "config.yml", "The training config as submitted (YAML).")
job_openai = _in(
    job_prefix,
    "openai.json",
    "What a job created at ``/v1/fine_tuning/jobs`` was asked that its config does not hold "
    "(validation file, suffix, method, metadata).",
)
job_run = _in(job_prefix, "run.yaml", "The current attempt's run.yaml (``runners.attempt_spec``).")
job_status = _in(job_prefix, "status.json", "The job's view.")
job_log = _in(
    job_prefix, "job.log", "Every attempt's log, of jobs run before attempts had prefixes (read only)."
)
job_metrics = _in(
    job_prefix,
    "events/metrics.jsonl",
    "Every attempt's metrics, of jobs run before attempts had prefixes (read only).",
)
checkpoints_prefix = _in(
    job_prefix, "checkpoints/", "Every attempt's checkpoints, of jobs run before attempts had prefixes."
)


def checkpoint_prefix(user_id: str, job_id: str, step: int) -> str:
    """``checkpoints/<step>/`` of a job run before attempts had prefixes."""
    return f"{checkpoints_prefix(user_id, job_id)}{step}/"


# Each attempt writes only under its own prefix, so two attempts (say an orphaned runner and the
# attempt that replaced it) never write one object.

attempts_prefix = _in(job_prefix, "attempts/", "``attempts/``: one folder per attempt of the job.")


def _attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValidationFailed(f"an attempt is a number from 1 (got {attempt!r:.40})", where="attempt")
    return attempt


def attempt_prefix(user_id: str, job_id: str, attempt: int) -> str:
    """``attempts/<n>/``: every object attempt ``n`` of the job writes lies under it."""
    return f"{attempts_prefix(user_id, job_id)}{_attempt(attempt)}/"


def attempt_log(user_id: str, job_id: str, attempt: int) -> str:
    """``attempts/<n>/job.log``: the runner's and the trainer's log of attempt ``n``."""
    return attempt_prefix(user_id, job_id, attempt) + "job.log"


def attempt_metrics(user_id: str, job_id: str, attempt: int) -> str:
    """``attempts/<n>/metrics.jsonl``: attempt ``n``'s training metrics, one JSON object per line."""
    return attempt_prefix(user_id, job_id, attempt) + "metrics.jsonl"


def attempt_checkpoints_prefix(user_id: str, job_id: str, attempt: int) -> str:
    return attempt_prefix(user_id, job_id, attempt) + "checkpoints/"


def attempt_checkpoint_prefix(user_id: str, job_id: str, attempt: int, step: int) -> str:
    """``attempts/<n>/checkpoints/<step>/``: the resumable state after optimizer step ``step``."""
    return f"{attempt_checkpoints_prefix(user_id, job_id, attempt)}{step}/"


_CHECKPOINT = re.compile(r"(?:attempts/([0-9]+)/)?checkpoints/([0-9]+)/")


def attempt_of_checkpoint(user_id: str, job_id: str, prefix: str) -> tuple[int, int] | None:
    """``(attempt, step)`` of checkpoint folder ``prefix`` of the job (attempt 0: a checkpoint of a job
    run before attempts had prefixes); None if ``prefix`` is not a checkpoint folder of this job."""
    job = job_prefix(user_id, job_id)
    if not prefix.startswith(job):
        return None
    match = _CHECKPOINT.fullmatch(prefix[len(job) :])
    if match is None:
        return None
    return int(match.group(1) or 0), int(match.group(2))


def unsent_heartbeats_prefix(user_id: str) -> str:
    """``users/<uid>/unsent-heartbeats/``: the user's spools (one list finds them all)."""
    return f"{user_partition(user_id)}/unsent-heartbeats/"


def unsent_heartbeats(user_id: str, job_id: str, attempt: int) -> str:
    """``unsent-heartbeats/<jid>/<n>.jsonl``: the heartbeats attempt ``n`` could not deliver, signed as
    they were, written once (create-only) by its runner as it ends; the ledger meters them."""
    return f"{unsent_heartbeats_prefix(user_id)}{check_id(job_id, kind='job_id')}/{_attempt(attempt)}.jsonl"


# -- datasets -----------------------------------------------------------------------------


def dataset_prefix(user_id: str, dataset_id: str) -> str:
    return f"{user_partition(user_id)}/data/{check_id(dataset_id, kind='dataset_id')}/"


dataset_raw_prefix = _in(dataset_prefix, "raw/")
dataset_processed_prefix = _in(dataset_prefix, "processed/")
dataset_processed = _in(
    dataset_processed_prefix, "train.jsonl", "The validated chat records a job trains on."
)
dataset_metadata = _in(dataset_prefix, "metadata.json", "The dataset's view.")


def dataset_raw(user_id: str, dataset_id: str, filename: str) -> str:
    """The upload as it came; ``filename`` must be a plain file name (ValidationFailed)."""
    check_filename(filename)
    return dataset_raw_prefix(user_id, dataset_id) + filename


# -- models -------------------------------------------------------------------------------


def model_prefix(user_id: str, model_id: str) -> str:
    return f"{user_partition(user_id)}/models/{check_id(model_id, kind='model_id')}/"


weights_prefix = _in(model_prefix, "weights/", "The trained adapter or weights, tokenizer and SHA256SUMS.")
model_config = _in(model_prefix, "config.json")
model_metadata = _in(model_prefix, "metadata.json", "The model's view.")


# -- raw heartbeats: the ledger's archive -----------------------------------------------------


def heartbeat_batch(user_id: str, received: datetime, sha256: str) -> str:
    """``users/<uid>/heartbeats/<yyyymmdd>/<hhmmssffffff>.<digest>.jsonl``: the heartbeats of one user's
    share of a ledger batch received at ``received`` (a UTC day per folder), every job attempt's
    (``storage.heartbeats.archive``), created once; ``digest``, the first 16 hex digits of the object's
    sha256, tells apart two shares received in the same microsecond (or tried again with other bytes)."""
    if received.tzinfo is None:
        raise ValueError("a heartbeat batch is named by an aware receive time")
    _check_sha256(sha256)
    utc = received.astimezone(UTC)
    return f"{user_partition(user_id)}/heartbeats/{utc:%Y%m%d}/{utc:%H%M%S%f}.{sha256[:16]}.jsonl"


def heartbeats_prefix(user_id: str, job_id: str, attempt: int) -> str:
    """``users/<uid>/heartbeats/<jid>/<attempt>/``: where the ledger archived an attempt's raw heartbeats
    before it archived a batch per user (``heartbeat_batch``)."""
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"an attempt is a count (got {attempt!r})")
    return f"{user_partition(user_id)}/heartbeats/{check_id(job_id, kind='job_id')}/{attempt}/"


def heartbeat_archive(
    user_id: str, job_id: str, attempt: int, first_seq: int, last_seq: int, sha256: str
) -> str:
    """``<first_seq>-<last_seq>.<digest>.jsonl`` under ``heartbeats_prefix``: one batch's heartbeats of the
    attempt (a v1 archive: ``storage.heartbeats.archive``), as earlier releases named them; ``digest``,
    the first 16 hex digits of the object's sha256. Read by the audit; the ledger now writes
    ``heartbeat_batch``."""
    for value in (first_seq, last_seq):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"seqs are counts (got {value!r})")
    _check_sha256(sha256)
    return f"{heartbeats_prefix(user_id, job_id, attempt)}{first_seq}-{last_seq}.{sha256[:16]}.jsonl"


def _check_sha256(sha256: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("a heartbeat archive is named by its sha256 (64 lower-case hex digits)")


def base_model_prefix(name: str) -> str:
    """``base-models/<name>/``: a converted base model (safetensors + tokenizer)."""
    return f"{BASE_MODELS}{check_id(name, kind='base_model')}/"


BASE_MODEL_MARKER = ".tune-base-model.json"
"""The file a finished base-model folder holds (naming its source), written last: its presence
under ``base-models/<name>/`` means the model is converted and complete in the bucket."""


def base_model_marker(name: str) -> str:
    """``base-models/<name>/.tune-base-model.json``: present once the converted model is complete."""
    return base_model_prefix(name) + BASE_MODEL_MARKER


# -- the ledger's keys and witnessed heads ----------------------------------------------------


def keyring_prefix() -> str:
    """``platform/keyring/``: the public keys that sign commits, each entry signed by the root key
    (``storage.eventstore.signing``); create-only."""
    return f"{PLATFORM}/keyring/"


def keyring_entry(key_id: str) -> str:
    """``platform/keyring/<key_id>.json`` (``key_id``: 32 hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{32}", key_id):
        raise ValueError(f"a key id is 32 hex digits: {key_id!r:.80}")
    return f"{keyring_prefix()}{key_id}.json"


def witness_prefix(partition: str) -> str:
    """``witness/<partition>/``: the partition's witnessed heads, in the witness bucket (``TUNE_WITNESS``)."""
    return f"witness/{partition}/"


def witness_head(partition: str, seq: int) -> str:
    """``witness/<partition>/<seq:012d>.json``: the head at commit ``seq``, signed (create-only)."""
    return f"{witness_prefix(partition)}{seq:012d}.json"


def relay_lease(partition: str, key_id: str) -> str:
    """``<partition>/writers/<key_id>.json``: which process leads the writers of the partition's events
    that sign with key ``key_id`` (``storage.eventstore.relay``); beside ``events/``, not under it."""
    if not re.fullmatch(r"[0-9a-f]{32}", key_id):
        raise ValueError(f"a key id is 32 hex digits: {key_id!r:.80}")
    return f"{partition}/writers/{key_id}.json"


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
    _pattern("log index", rf"{_PARTITION}/events/(?:snapshots/|tracking/(?:{_ID}/)?)?indexes/{_SEQ}\.json"),
    _pattern("snapshot", rf"{_PARTITION}/events/snapshots/(?:segments/)?{_SEQ}\.json"),
    _pattern("tracking", rf"{_PARTITION}/events/tracking/(?:{_ID}/)?(?:segments/)?{_SEQ}\.json"),
    _pattern("platform view", rf"platform/metadata/(?:{_one_of(PLATFORM_VIEWS)})\.json"),
    _pattern("user view", rf"{_USER}/metadata/(?:{_one_of(USER_COPIES + USER_VIEWS)})\.json"),
    _pattern("view index", rf"{_USER}/metadata/index/(?:{_one_of(INDEXED)})/(?:head|[0-9]{{6,}})\.json"),
    _pattern(
        "job file",
        rf"{_USER}/jobs/{_ID}/(?:config\.yml|openai\.json|run\.yaml|status\.json|job\.log"
        r"|events/metrics\.jsonl)",
    ),
    _pattern("attempt file", rf"{_USER}/jobs/{_ID}/attempts/[0-9]+/(?:job\.log|metrics\.jsonl)"),
    _pattern("checkpoint", rf"{_USER}/jobs/{_ID}/(?:attempts/[0-9]+/)?checkpoints/[0-9]+/{_REST}"),
    _pattern("unsent heartbeats", rf"{_USER}/unsent-heartbeats/{_ID}/[0-9]+\.jsonl"),
    _pattern("dataset file", rf"{_USER}/data/{_ID}/(?:raw/[^/]+|processed/train\.jsonl|metadata\.json)"),
    _pattern("model file", rf"{_USER}/models/{_ID}/(?:weights/{_REST}|config\.json|metadata\.json)"),
    _pattern("base model", rf"base-models/{_ID}/{_REST}"),
    _pattern("relay lease", rf"{_PARTITION}/writers/[0-9a-f]{{32}}\.json"),
    _pattern("keyring entry", r"platform/keyring/[0-9a-f]{32}\.json"),
    _pattern("witnessed head", rf"witness/{_PARTITION}/{_SEQ}\.json"),
    _pattern("heartbeat batch", rf"{_USER}/heartbeats/[0-9]{{8}}/[0-9]{{12}}\.[0-9a-f]{{16}}\.jsonl"),
    _pattern("heartbeat archive", rf"{_USER}/heartbeats/{_ID}/[0-9]+/[0-9]+-[0-9]+\.[0-9a-f]{{16}}\.jsonl"),
)
"""The shape of every key written to a bucket, by name (``check_key``)."""


def check_key(key: str) -> str:
    """The name of the pattern ``key`` matches; ValueError if it matches none."""
    for name, pattern in PATTERNS:
        if pattern.fullmatch(key):
            return name
    raise ValueError(f"not a name of the bucket layout (storage.layout): {key!r:.200}")
