"""Issue 14: a base model is converted once per platform, when it enters the catalogue (``tune serve``'s
start-up, ``tune admin base-model add``), in the background: a user's first job and first chat
copy it from the bucket and convert nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import runners.workdir
from domain.base_models import BaseModelSource
from roles.bootstrap import bootstrap
from roles.embedded import EmbeddedWorkers
from runners.base_model_prep import BaseModelPreparer, is_selected
from runners.serving import ModelFiles
from runners.workdir import fetch_base_model
from runtime.context import Runtime
from runtime.serving import ModelRef
from runtime.settings import Settings
from storage import layout
from storage.layout import PLATFORM
from tests.api.conftest import make_settings


def _no_conversion(*args: object, **kwargs: object) -> None:
    raise AssertionError("a base model was converted at its first use")


def _wait_for(check: object, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the base model never reached the bucket"
        time.sleep(0.2)


def test_a_fresh_platform_has_its_base_model_in_the_bucket_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    rt = Runtime(make_settings(home, prepare_base_models=("tiny-llama",)))
    bootstrap(rt)
    marker = layout.base_model_marker("tiny-llama")
    workers = EmbeddedWorkers(rt)
    try:
        began = time.monotonic()
        workers.start()
        assert time.monotonic() - began < 10 and not rt.bucket.exists(marker)  # on a thread: start-up goes on
        _wait_for(lambda: rt.bucket.exists(marker))
    finally:
        workers.close(timeout=10)
    assert not rt.bucket.exists(layout.base_model_marker("smollm2-135m"))  # only what it was asked for
    assert (home / "base-models" / "tiny-llama" / runners.workdir.MARKER).is_file()  # the serving store too

    monkeypatch.setattr(runners.workdir, "resolve_base_model", _no_conversion)
    job_base = fetch_base_model(
        rt.bucket, "tiny-llama", tmp_path / "job" / "base", cache_dir=tmp_path / "runner"
    )
    assert (job_base / "config.json").is_file()  # a runner elsewhere: a copy, no conversion
    files = ModelFiles(rt.bucket, tmp_path / "chat", base_store=tmp_path / "empty-store")
    chat_base = files.base(ModelRef("tiny-llama", "tiny-llama"))
    assert (chat_base / "config.json").is_file() and not (tmp_path / "empty-store").exists()


def test_a_base_model_added_later_is_prepared_once_and_a_broken_one_is_left_to_its_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    rt = Runtime(make_settings(home))
    bootstrap(rt)
    store = home / "base-models"
    prep = BaseModelPreparer(rt.bucket, store, rt.base_model_sources, selection=("local",))
    assert prep.prepare_pending() == []  # the built-in models are not "local"

    from runners.base_models import resolve_base_model

    folder = tmp_path / "operator-model"
    shutil.copytree(resolve_base_model("tiny-llama", tmp_path / "elsewhere"), folder)
    rt.platform.add_base_model("mine", "local", str(folder), rt.clock())  # as `tune admin base-model add`
    rt.platform.add_base_model("broken", "local", str(tmp_path / "gone"), rt.clock())
    rt.committed(PLATFORM)
    assert prep.prepare_pending() == ["mine"]
    assert rt.bucket.exists(layout.base_model_marker("mine"))
    assert not rt.bucket.exists(layout.base_model_marker("broken"))
    assert "broken could not be prepared" in caplog.text
    assert prep.prepare_pending() == []  # once: neither converted again nor retried in a loop


def test_which_base_models_are_prepared() -> None:
    builtin, hub = BaseModelSource("b", "builtin", "b"), BaseModelSource("h", "hub", "org/h")
    assert Settings.from_env({}).prepare_base_models == ("builtin", "local")
    assert Settings.from_env({"TUNE_PREPARE_BASE_MODELS": "none"}).prepare_base_models == ()
    chosen = Settings.from_env({"TUNE_PREPARE_BASE_MODELS": " h, local "}).prepare_base_models
    assert chosen == ("h", "local")
    assert is_selected(hub, chosen) and not is_selected(builtin, chosen)
    assert is_selected(builtin, ("all",)) and not is_selected(hub, ())
