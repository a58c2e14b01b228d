"""Copies between the bucket and a working folder: folders, base models, weights with their manifest, logs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runners.attempt_spec import JobRunSpec
from runners.base_models import MARKER, BaseModelSource
from runners.log_mirror import MirroredFile
from runners.workdir import (
    MANIFEST,
    download_prefix,
    fetch_base_model,
    prune_checkpoints,
    prune_job_checkpoints,
    publish_model,
    upload_folder,
)
from storage import Bucket, LocalBucket


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


class OrderedBucket(LocalBucket):
    """Remembers the order objects were uploaded in."""

    uploads: list[str]

    def upload(self, name, stream):  # type: ignore[no-untyped-def]
        self.uploads = [*getattr(self, "uploads", []), name]
        return super().upload(name, stream)


def test_a_folder_round_trips_with_its_marker_uploaded_last(tmp_path: Path) -> None:
    bucket = OrderedBucket(tmp_path / "bucket")
    files = {MARKER: b"{}", "a.json": b"1", "sub/b.bin": b"\x00" * 3000, "z.txt": b"z"}
    src = make_folder(tmp_path / "src", files)
    assert upload_folder(bucket, src, "base-models/m/", last=MARKER) == sum(map(len, files.values()))
    assert bucket.uploads[-1] == "base-models/m/" + MARKER

    assert download_prefix(bucket, "base-models/m/", tmp_path / "dst") == 4
    assert tree(tmp_path / "dst") == files


def test_clear_removes_what_an_earlier_upload_left(local_bucket: LocalBucket, tmp_path: Path) -> None:
    local_bucket.write("x/stale.bin", b"old")
    upload_folder(local_bucket, make_folder(tmp_path / "src", {"new.bin": b"new"}), "x/", clear=True)
    assert list(local_bucket.list("x/")) == ["x/new.bin"]


def test_pruning_keeps_the_latest_checkpoints_by_step(local_bucket: LocalBucket) -> None:
    for step in (5, 10, 40, 100):
        local_bucket.write(f"c/{step}/state.json", b"{}")
        local_bucket.write(f"c/{step}/weights.bin", b"w")
    assert prune_checkpoints(local_bucket, "c/", keep=2) == [5, 10]
    assert sorted({n.split("/")[1] for n in local_bucket.list("c/")}) == ["100", "40"]


def test_a_prefix_must_name_a_folder(local_bucket: LocalBucket, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        download_prefix(local_bucket, "users/u/data/d/processed/train.jsonl", tmp_path)


def test_a_base_model_is_resolved_once_uploaded_and_then_copied_from_the_bucket(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": b"w" * 100,
        "tokenizer.json": b"{}",
    }
    source = BaseModelSource("my-model", "local", str(make_folder(tmp_path / "operator", files)))
    first = fetch_base_model(
        local_bucket, "my-model", tmp_path / "w1", cache_dir=tmp_path / "cache1", source=source
    )
    assert {k: v for k, v in tree(first).items() if k != MARKER} == files
    assert local_bucket.exists("base-models/my-model/" + MARKER)

    # Another runner, whose cache is empty and whose source is gone, copies it from the bucket.
    (tmp_path / "operator" / "model.safetensors").unlink()
    second = fetch_base_model(
        local_bucket, "my-model", tmp_path / "w2", cache_dir=tmp_path / "cache2", source=source
    )
    assert tree(second) == tree(first)
    assert not (tmp_path / "cache2" / "my-model").exists()


def spec(**fields: object) -> JobRunSpec:
    base = {
        "job_id": "job_1",
        "user_id": "usr_1",
        "attempt": 2,
        "model_id": "model_1",
        "base_model": "tiny-llama",
        "dataset_id": "ds_1",
        "gpu_type": "cpu",
        "gpu_count": 1,
    }
    return JobRunSpec(**{**base, **fields})  # type: ignore[arg-type]


def test_published_weights_carry_a_manifest_whose_digest_is_the_models(
    bucket: Bucket, tmp_path: Path
) -> None:
    files = {
        "adapter_model.safetensors": b"\x07" * 5000,
        "adapter_config.json": b"{}",
        "tok/vocab.json": b"[]",
    }
    model_dir = make_folder(tmp_path / "model", files)
    run = spec()
    weights = publish_model(bucket, run, model_dir, {"train_loss": 0.25})

    manifest = bucket.read(run.weights_prefix + MANIFEST)
    assert weights.sha256 == hashlib.sha256(manifest).hexdigest()
    assert manifest.decode().splitlines() == [
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}" for name in sorted(files)
    ]
    assert (weights.kind, weights.weights_prefix, weights.size_bytes) == (
        "lora",
        "users/usr_1/models/model_1/weights/",
        sum(map(len, files.values())),
    )
    for name, data in files.items():
        assert bucket.read(run.weights_prefix + name) == data
    config = json.loads(bucket.read("users/usr_1/models/model_1/config.json"))
    assert (config["job_id"], config["base_model"], config["kind"], config["sha256"]) == (
        "job_1",
        "tiny-llama",
        "lora",
        weights.sha256,
    )
    assert config["metrics"] == {"train_loss": 0.25} and config["training_config"]["method"] == "lora"


def test_a_mirrored_log_continues_the_object_and_uploads_only_when_it_grew(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    local_bucket.write("jobs/j/job.log", b"attempt 1\n")
    mirror = MirroredFile(local_bucket, "jobs/j/job.log", tmp_path / "job.log")
    assert mirror.sync() is False
    mirror.append_line("attempt 2")
    with open(tmp_path / "job.log", "ab") as child:  # a child process writing to the same file
        child.write(b"trainer stderr\n")
    assert mirror.sync() is True
    assert local_bucket.read("jobs/j/job.log") == b"attempt 1\nattempt 2\ntrainer stderr\n"
    assert mirror.sync() is False


def test_pruning_a_job_keeps_its_latest_checkpoints_across_attempts(local_bucket: LocalBucket) -> None:
    job = "users/usr_1/jobs/job_1/"
    folders = [
        "checkpoints/5/",  # written before attempts had prefixes: attempt 0
        "attempts/1/checkpoints/10/",
        "attempts/1/checkpoints/60/",  # an orphaned attempt went on past the job's last checkpoint
        "attempts/2/checkpoints/15/",
        "attempts/2/checkpoints/20/",
    ]
    for folder in folders:
        local_bucket.write(job + folder + "state.json", b"{}")
        local_bucket.write(job + folder + "deep/weights.bin", b"w")
    local_bucket.write(job + "attempts/2/job.log", b"log")
    deleted = prune_job_checkpoints(local_bucket, "usr_1", "job_1", keep=3)
    assert deleted == [job + "checkpoints/5/", job + "attempts/1/checkpoints/10/"]
    left = sorted(n.removesuffix("state.json") for n in local_bucket.list(job) if n.endswith("state.json"))
    assert left == [job + f for f in folders[2:]]
    assert local_bucket.exists(job + "attempts/2/job.log")
