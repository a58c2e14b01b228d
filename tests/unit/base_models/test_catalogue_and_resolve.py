"""The base-model catalogue and resolver: built-ins build once, hub names fail fast, local folders copy."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from domain.errors import NotFound, ValidationFailed
from domain.ids import check_id
from runners.base_models import (
    CATALOGUE,
    MARKER,
    BaseModelSource,
    HubUnavailable,
    check_model_folder,
    resolve_base_model,
)


def test_every_catalogue_name_is_a_safe_id_and_hub_sources_are_repo_ids() -> None:
    assert {"tiny-llama", "smollm2-135m", "llama3-8b"} <= set(CATALOGUE)
    for name, source in CATALOGUE.items():
        assert check_id(name) == name == source.name
        if source.kind == "hub":
            owner, _, repo = source.source.partition("/")
            assert owner and repo, source
    assert CATALOGUE["llama3-8b"].source == "meta-llama/Meta-Llama-3-8B-Instruct"


def test_tiny_llama_is_built_once_then_served_from_the_cache(tmp_path: Path) -> None:
    folder = resolve_base_model("tiny-llama", tmp_path)
    weights = folder / "model.safetensors"
    built_at = weights.stat().st_mtime_ns

    assert folder == tmp_path / "tiny-llama" and (folder / MARKER).is_file()
    assert resolve_base_model("tiny-llama", tmp_path) == folder
    assert weights.stat().st_mtime_ns == built_at
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".building")]


def test_a_folder_without_a_marker_or_from_another_source_is_rebuilt(tmp_path: Path) -> None:
    folder = resolve_base_model("tiny-llama", tmp_path)
    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, "builder_version": "0"}))
    (folder / "junk.bin").write_text("half-written")

    assert resolve_base_model("tiny-llama", tmp_path) == folder
    assert json.loads((folder / MARKER).read_text()) == marker and not (folder / "junk.bin").exists()


def test_an_unknown_name_is_not_found_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as caught:
        resolve_base_model("gpt-17", tmp_path)
    assert caught.value.where == "base_model" and "tiny-llama" in caught.value.message
    with pytest.raises(ValidationFailed):
        resolve_base_model("../etc", tmp_path)


def test_a_hub_model_fails_at_once_when_the_hub_is_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as caught:
        resolve_base_model("llama3-8b", tmp_path)
    assert time.monotonic() - started < 1.0
    error = caught.value
    assert error.where == "base_model" and "HF_HUB_OFFLINE" in error.message
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in error.message
    assert not (tmp_path / "llama3-8b").exists()


def test_a_hub_model_fails_fast_when_the_endpoint_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as caught:
        resolve_base_model("qwen2_5-0_5b", tmp_path)
    assert time.monotonic() - started < 5.0
    assert "unreachable" in caught.value.message


def test_an_operator_folder_is_checked_and_copied_into_the_store(tmp_path: Path) -> None:
    built = resolve_base_model("tiny-llama", tmp_path / "build")
    source_dir = tmp_path / "mine"
    shutil.copytree(built, source_dir)
    source = BaseModelSource("my-model", "local", str(source_dir))

    folder = resolve_base_model("my-model", tmp_path / "store", source=source)

    assert folder == tmp_path / "store" / "my-model"
    info = check_model_folder(folder)
    assert (
        info.model_type == "llama" and info.has_chat_template and info.weight_files == ["model.safetensors"]
    )
    assert json.loads((folder / MARKER).read_text())["source"] == str(source_dir)


@pytest.mark.parametrize(
    ("remove", "words"), [("model.safetensors", "no weights"), ("config.json", "config.json")]
)
def test_an_incomplete_folder_is_refused_naming_what_is_missing(
    tmp_path: Path, remove: str, words: str
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(resolve_base_model("tiny-llama", tmp_path / "build"), folder)
    (folder / remove).unlink()
    source = BaseModelSource("broken", "local", str(folder))
    with pytest.raises(ValidationFailed) as caught:
        resolve_base_model("broken", tmp_path / "store", source=source)
    assert words in caught.value.message and caught.value.where == "folder"
    assert not (tmp_path / "store" / "broken").exists()
