"""Which chat engine a process wires in: ``TUNE_SERVING_ENGINE``, ``TUNE_VLLM_URLS`` (runtime.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roles.embedded import open_chat_engine
from runners.serving import AdapterEngine, ModelFiles, VllmEngine
from runtime.settings import Settings
from storage.memory import MemoryBucket


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"TUNE_HOME": str(tmp_path), **env})


def test_the_local_engine_is_the_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert (settings.serving_engine, settings.vllm_urls) == ("local", {})
    files = ModelFiles(MemoryBucket(), tmp_path / "serving", base_store=tmp_path / "base-models")
    assert isinstance(open_chat_engine(settings, files), AdapterEngine)


def test_vllm_servers_are_named_per_base_model(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        TUNE_SERVING_ENGINE="vllm",
        TUNE_VLLM_URLS="tiny-llama=http://gpu-1:8000, smollm2-135m = https://gpu-2:8000/",
        TUNE_SERVING_ADAPTERS="3",
    )
    assert settings.vllm_urls == {"tiny-llama": "http://gpu-1:8000", "smollm2-135m": "https://gpu-2:8000/"}
    files = ModelFiles(MemoryBucket(), tmp_path / "serving", base_store=tmp_path / "base-models")
    engine = open_chat_engine(settings, files)
    assert isinstance(engine, VllmEngine) and engine.max_adapters == 3
    engine.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TUNE_SERVING_ENGINE": "vllm"}, "needs TUNE_VLLM_URLS"),
        ({"TUNE_SERVING_ENGINE": "tgi"}, "local or vllm"),
        ({"TUNE_VLLM_URLS": "tiny-llama"}, "<base model>=<http"),
        ({"TUNE_VLLM_URLS": "tiny-llama=gpu-1:8000"}, "<base model>=<http"),
        ({"TUNE_VLLM_URLS": "a=http://x,a=http://y"}, "twice"),
    ],
)
def test_a_bad_engine_setting_is_refused_at_start(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(tmp_path, **env)
