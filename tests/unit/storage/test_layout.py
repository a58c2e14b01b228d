"""``storage.layout``: every object name from checked ids, and the patterns every key matches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.errors import ValidationFailed
from storage import layout
from storage.bucket import check_name

U, J, D, M = "usr_1", "job_1", "ds_1", "mdl_1"
BAD_IDS = ("", "..", "../etc", "a/b", "-x", "x" * 65, "a b", "é")


def test_partitions_and_their_events() -> None:
    assert layout.PLATFORM == "platform"
    assert layout.user_partition(U) == "users/usr_1"
    assert layout.PLATFORM_EVENTS == layout.events_prefix(layout.PLATFORM) == "platform/events/"
    assert layout.user_events(U) == "users/usr_1/events/"
    assert layout.user_of("users/usr_1") == U
    for not_a_user in ("platform", "user/usr_1", "base-models/x", ""):
        with pytest.raises(ValueError):
            layout.user_of(not_a_user)
    with pytest.raises(ValidationFailed):
        layout.user_of("users/../x")


def test_views() -> None:
    assert layout.position(layout.PLATFORM) == "platform/metadata/position.json"
    assert layout.position("users/usr_1") == "users/usr_1/metadata/position.json"
    assert layout.metadata_prefix("users/usr_1") == "users/usr_1/metadata/"
    assert layout.users() == "platform/metadata/users.json"
    assert layout.pricing() == "platform/metadata/gpu_pricing.json"
    assert layout.base_models() == "platform/metadata/base_models.json"
    assert layout.user_info(U) == "users/usr_1/metadata/user_info.json"
    assert layout.user_pricing(U) == "users/usr_1/metadata/gpu_pricing.json"
    assert layout.jobs(U) == "users/usr_1/metadata/jobs.json"
    assert layout.datasets(U) == "users/usr_1/metadata/datasets.json"
    assert layout.models(U) == "users/usr_1/metadata/models.json"
    assert layout.billing(U) == "users/usr_1/metadata/billing.json"
    assert layout.billing_history(U) == "users/usr_1/metadata/billing_history.json"


def test_job_dataset_model_and_base_model_names() -> None:
    job = "users/usr_1/jobs/job_1/"
    assert layout.job_prefix(U, J) == job
    assert layout.job_config(U, J) == job + "config.yml"
    assert layout.job_run(U, J) == job + "run.yaml"
    assert layout.job_status(U, J) == job + "status.json"
    assert layout.job_log(U, J) == job + "job.log"
    assert layout.job_metrics(U, J) == job + "events/metrics.jsonl"
    assert layout.checkpoints_prefix(U, J) == job + "checkpoints/"
    assert layout.checkpoint_prefix(U, J, 40) == job + "checkpoints/40/"
    data = "users/usr_1/data/ds_1/"
    assert layout.dataset_prefix(U, D) == data
    assert layout.dataset_raw_prefix(U, D) == data + "raw/"
    assert layout.dataset_raw(U, D, "my data.jsonl") == data + "raw/my data.jsonl"
    assert layout.dataset_processed_prefix(U, D) == data + "processed/"
    assert layout.dataset_processed(U, D) == data + "processed/train.jsonl"
    assert layout.dataset_metadata(U, D) == data + "metadata.json"
    model = "users/usr_1/models/mdl_1/"
    assert layout.model_prefix(U, M) == model
    assert layout.weights_prefix(U, M) == model + "weights/"
    assert layout.model_config(U, M) == model + "config.json"
    assert layout.model_metadata(U, M) == model + "metadata.json"
    assert layout.base_model_prefix("tiny-llama") == "base-models/tiny-llama/"


def test_each_attempt_writes_under_its_own_prefix() -> None:
    job = "users/usr_1/jobs/job_1/"
    assert layout.attempts_prefix(U, J) == job + "attempts/"
    assert layout.attempt_prefix(U, J, 2) == job + "attempts/2/"
    assert layout.attempt_log(U, J, 2) == job + "attempts/2/job.log"
    assert layout.attempt_metrics(U, J, 2) == job + "attempts/2/metrics.jsonl"
    assert layout.attempt_checkpoints_prefix(U, J, 2) == job + "attempts/2/checkpoints/"
    assert layout.attempt_checkpoint_prefix(U, J, 2, 40) == job + "attempts/2/checkpoints/40/"
    assert layout.unsent_heartbeats(U, J, 2) == "users/usr_1/unsent-heartbeats/job_1/2.jsonl"
    assert layout.unsent_heartbeats(U, J, 2).startswith(layout.unsent_heartbeats_prefix(U))
    assert layout.attempt_of_checkpoint(U, J, job + "attempts/2/checkpoints/40/") == (2, 40)
    assert layout.attempt_of_checkpoint(U, J, job + "checkpoints/40/") == (0, 40)  # an older job's
    others = (job + "attempts/2/job.log", "users/usr_1/jobs/job_2/checkpoints/4/", job + "checkpoints/x/")
    for other in others:
        assert layout.attempt_of_checkpoint(U, J, other) is None
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValidationFailed):
            layout.attempt_prefix(U, J, bad)  # type: ignore[arg-type]


NAMED_BY_IDS = [
    layout.user_partition,
    layout.user_events,
    layout.user_info,
    layout.user_pricing,
    layout.jobs,
    layout.datasets,
    layout.models,
    layout.billing,
    layout.billing_history,
    lambda bad: layout.index_head(bad, "jobs"),
    lambda bad: layout.index_page(bad, "datasets", 0),
    layout.base_model_prefix,
    lambda bad: layout.job_prefix(bad, J),
    lambda bad: layout.job_run(U, bad),
    lambda bad: layout.job_status(U, bad),
    lambda bad: layout.checkpoint_prefix(U, bad, 1),
    lambda bad: layout.attempt_checkpoint_prefix(U, bad, 1, 1),
    lambda bad: layout.attempt_log(bad, J, 1),
    lambda bad: layout.unsent_heartbeats(U, bad, 1),
    lambda bad: layout.dataset_metadata(bad, D),
    lambda bad: layout.dataset_processed(U, bad),
    lambda bad: layout.dataset_raw(U, bad, "a.jsonl"),
    lambda bad: layout.model_metadata(U, bad),
    lambda bad: layout.weights_prefix(bad, M),
]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("name", NAMED_BY_IDS)
def test_bad_ids_form_no_name(name, bad: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed):
        name(bad)


@pytest.mark.parametrize("filename", ["", ".", "..", "a/b", "a\\b", " padded", "x" * 256])
def test_a_raw_upload_is_named_by_a_plain_file_name(filename: str) -> None:
    with pytest.raises(ValidationFailed):
        layout.dataset_raw(U, D, filename)


def _every_name() -> list[str]:
    seq = "000000000042.json"
    return [
        layout.PLATFORM_EVENTS + seq,
        layout.user_events(U) + seq,
        layout.user_events(U) + "segments/000000000256.json",
        layout.user_events(U) + "indexes/000000000256.json",
        layout.user_events(U) + "snapshots/" + seq,
        layout.PLATFORM_EVENTS + "tracking/Projector/" + seq,
        layout.position(layout.PLATFORM),
        layout.position(layout.user_partition(U)),
        layout.keyring_entry("0123456789abcdef" * 2),
        layout.witness_head(layout.PLATFORM, 42),
        layout.witness_head(layout.user_partition(U), 7),
        layout.relay_lease(layout.PLATFORM, "0123456789abcdef" * 2),
        layout.relay_lease(layout.user_partition(U), "0123456789abcdef" * 2),
        layout.users(),
        layout.pricing(),
        layout.base_models(),
        layout.user_info(U),
        layout.user_pricing(U),
        layout.jobs(U),
        layout.datasets(U),
        layout.models(U),
        layout.billing(U),
        layout.billing_history(U),
        layout.index_head(U, "jobs"),
        layout.index_page(U, "models", 12),
        layout.job_config(U, J),
        layout.job_run(U, J),
        layout.job_status(U, J),
        layout.job_log(U, J),
        layout.job_metrics(U, J),
        layout.checkpoint_prefix(U, J, 3) + "adapter_model.safetensors",
        layout.checkpoint_prefix(U, J, 3) + "optimizer/state.pt",
        layout.attempt_log(U, J, 2),
        layout.attempt_metrics(U, J, 2),
        layout.attempt_checkpoint_prefix(U, J, 2, 3) + "adapter_model.safetensors",
        layout.unsent_heartbeats(U, J, 2),
        layout.dataset_raw(U, D, "my data.jsonl"),
        layout.dataset_processed(U, D),
        layout.dataset_metadata(U, D),
        layout.weights_prefix(U, M) + "adapter_model.safetensors",
        layout.weights_prefix(U, M) + "deep/er/file.txt",
        layout.model_config(U, M),
        layout.model_metadata(U, M),
        layout.base_model_prefix("tiny-llama") + "config.json",
        layout.heartbeat_archive(U, J, 2, 1, 40, "0f" * 32),
        layout.heartbeat_batch(U, datetime(2026, 3, 10, 12, 0, 1, 2, tzinfo=UTC), "0f" * 32),
    ]


def test_every_name_the_functions_make_matches_a_pattern() -> None:
    kinds = {layout.check_key(check_name(name)) for name in _every_name()}
    assert kinds == {p.name for p in layout.PATTERNS}


@pytest.mark.parametrize(
    "key",
    [
        "platform/events/42.json",
        "platform/events/000000000042.yaml",
        "platform/metadata/jobs.json",
        "users/usr_1/metadata/users.json",
        "users/usr_1/metadata/notes.json",
        "users/usr_1/jobs/job_1/notes.txt",
        "users/usr_1/jobs/job_1/checkpoints/latest/x",
        "users/usr_1/jobs/job_1/checkpoints/3/",
        "users/usr_1/data/ds_1/raw/a/b.jsonl",
        "users/usr_1/data/ds_1/processed/other.jsonl",
        "users/usr_1/models/mdl_1/weights",
        "users/-x/metadata/jobs.json",
        "base-models/tiny-llama",
        "tmp/file",
        "users/usr_1",
        "users/usr_1/heartbeats/job_1/1/1-3.jsonl",
        "users/usr_1/heartbeats/job_1/1/1-3.0f0f0f0f0f0f0f0f.json",
        "users/usr_1/heartbeats/job_1/x/1-3.0f0f0f0f0f0f0f0f.jsonl",
        "users/usr_1/heartbeats/job_1/1/latest.jsonl",
        "users/usr_1/heartbeats/20260310/120001000002.jsonl",
        "users/usr_1/heartbeats/20260310/1200.0f0f0f0f0f0f0f0f.jsonl",
        "users/usr_1/heartbeats/2026031/120001000002.0f0f0f0f0f0f0f0f.jsonl",
    ],
)
def test_a_key_outside_the_layout_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="not a name of the bucket layout"):
        layout.check_key(key)


def test_a_heartbeat_archive_is_named_by_its_job_attempt_seqs_and_digest() -> None:
    sha = "0123456789abcdef" * 4
    name = f"users/{U}/heartbeats/{J}/2/1-40.0123456789abcdef.jsonl"
    assert layout.heartbeat_archive(U, J, 2, 1, 40, sha) == name
    for bad in ((-1, 1, 2, sha), (True, 1, 2, sha), (1, 1, 2, "ABC"), (1, -3, 2, sha)):
        with pytest.raises(ValueError):
            layout.heartbeat_archive(U, J, *bad)  # type: ignore[arg-type]


def test_a_heartbeat_batch_is_named_by_its_user_utc_receive_time_and_digest() -> None:
    sha = "0123456789abcdef" * 4
    received = datetime(2026, 3, 10, 1, 2, 3, 4567, tzinfo=timezone(timedelta(hours=2)))
    name = f"users/{U}/heartbeats/20260309/230203004567.0123456789abcdef.jsonl"
    assert layout.heartbeat_batch(U, received, sha) == name
    assert layout.check_key(name) == "heartbeat batch"
    for bad in ((received.replace(tzinfo=None), sha), (received, "ABC")):
        with pytest.raises(ValueError):
            layout.heartbeat_batch(U, *bad)
