"""The dispatcher's backend settings: local by default, ``ray`` with its cluster's address; a Ray
dispatcher's runners publish heartbeats to Pub/Sub only."""

from __future__ import annotations

from pathlib import Path

import pytest

from roles.dispatcher import ray_dispatcher
from runners.backends import RayJobsBackend
from runtime.context import Runtime
from runtime.settings import Settings


def test_the_local_backend_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"TUNE_HOME": str(tmp_path)})
    assert (settings.launch_backend, settings.ray_stop_wait_s) == ("local", 300)


def test_ray_is_chosen_with_its_address_and_stop_wait(tmp_path: Path) -> None:
    env = {
        "TUNE_HOME": str(tmp_path),
        "TUNE_LAUNCH_BACKEND": "ray",
        "TUNE_RAY_ADDRESS": "http://10.0.0.2:8265",
        "TUNE_RAY_STOP_WAIT_S": "120",
    }
    settings = Settings.from_env(env)
    assert (settings.launch_backend, settings.ray_address, settings.ray_stop_wait_s) == (
        "ray",
        "http://10.0.0.2:8265",
        120,
    )


def test_an_unknown_backend_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TUNE_LAUNCH_BACKEND must be one of local, ray"):
        Settings.from_env({"TUNE_HOME": str(tmp_path), "TUNE_LAUNCH_BACKEND": "slurm"})


def test_a_ray_dispatcher_writes_its_pubsub_url_into_run_yaml_and_refuses_any_other(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, bucket_url=f"file://{tmp_path}/bucket", ray_address="http://127.0.0.1:1"
    )
    runtime = Runtime(settings)
    dispatcher = ray_dispatcher(settings, runtime, heartbeats="pubsub://p/hb/hb-sub", runner_module="m")
    assert isinstance(dispatcher.backend, RayJobsBackend)
    assert (dispatcher.heartbeat_url, dispatcher.hardware_source) == ("pubsub://p/hb/hb-sub", "ray")
    assert dispatcher.backend.env["TUNE_HOME"] == str(tmp_path)
    with pytest.raises(ValueError, match="Pub/Sub"):
        ray_dispatcher(settings, runtime, heartbeats="direct://x", runner_module="m")


def test_a_local_dispatcher_on_pubsub_has_its_runners_publish_themselves(tmp_path: Path) -> None:
    """Multi-process topology: the runner (its own session) publishes to Pub/Sub, so its heartbeats
    go on reaching the ledger while the dispatcher that started it is down; only a non-Pub/Sub URL
    is relayed through the dispatcher from the runner's stdout."""
    from roles.dispatcher import local_role_dispatcher
    from runners.backends import LocalSubprocessBackend
    from runners.heartbeat_relay import STDOUT_URL

    settings = Settings(home=tmp_path, bucket_url=f"file://{tmp_path}/bucket")
    runtime = Runtime(settings)
    dispatcher, publisher = local_role_dispatcher(
        settings, runtime, heartbeats="pubsub://p/hb/hb-sub", runner_module="m"
    )
    assert isinstance(dispatcher.backend, LocalSubprocessBackend)
    assert dispatcher.heartbeat_url == "pubsub://p/hb/hb-sub" and publisher is None
    assert dispatcher.backend.on_heartbeat is None
    relayed, publisher = local_role_dispatcher(settings, runtime, heartbeats="direct://t", runner_module="m")
    assert relayed.heartbeat_url == STDOUT_URL and publisher is not None
    publisher.close()
