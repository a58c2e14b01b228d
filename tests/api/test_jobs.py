"""Starting jobs (config checked whole first), status, list, stop, events, logs, limits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from domain.model import ModelWeights
from runtime.settings import Settings
from storage import layout
from tests.api.conftest import Api, User, chat_lines, make_settings

HUB_MODEL = "qwen2_5-0_5b"  # a hub entry of the built-in catalogue


@pytest.fixture
def dataset(api: Api, ann: User) -> str:
    return api.upload(ann)["dataset_id"]  # type: ignore[no-any-return]


def jobs_of(api: Api, user: User, **params: str) -> list[dict]:
    reply = api.client.get(f"/fine-tune/{user.user_id}/list", params=params, headers=user.headers)
    assert reply.status_code == 200, reply.text
    return reply.json()["jobs"]  # type: ignore[no-any-return]


def test_start_submits_and_the_status_shows_it_at_once(api: Api, ann: User, dataset: str) -> None:
    seen: list[tuple[str, str]] = []
    api.rt.job_submitted.append(lambda user_id, job_id: seen.append((user_id, job_id)))
    reply = api.start(ann, dataset, config={"epochs": 2, "lora": {"r": 4}, "max_cost": "5"})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    job_id = body["job_id"]
    assert body["status"] == "submitted" and body["model_id"] and body["estimate_usd_micros"] >= 0
    assert body["config"]["epochs"] == 2 and body["config"]["lora"]["r"] == 4
    assert body["max_cost_usd_micros"] == 5_000_000
    assert seen == [(ann.user_id, job_id)]
    status = api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()
    assert (status["job_id"], status["status"], status["dataset_id"]) == (job_id, "submitted", dataset)
    assert [j["job_id"] for j in jobs_of(api, ann)] == [job_id]
    stored = yaml.safe_load(api.rt.bucket.read(f"users/{ann.user_id}/jobs/{job_id}/config.yml"))
    assert stored == body["config"]


def test_config_may_be_yaml_text(api: Api, ann: User, dataset: str) -> None:
    reply = api.start(ann, dataset, config="epochs: 1\nlearning_rate: 0.001\n")
    assert reply.status_code == 201 and reply.json()["config"]["learning_rate"] == 0.001


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lora": {"r": "big"}}, "lora.r"),
        ({"epochz": 1}, "epochz"),
        ({"epochs": 0, "batch_size": -1}, "epochs, batch_size"),
        ("epochs: 1\nlora: {r: 4\n", "config line 3"),  # the unclosed brace is found at the end
        ("- a list\n", "config"),
        ("epochs: 1\nseed: 2\nepochs: 2\n", "config line 3"),  # a key written twice: refused, not last-wins
        ("lora: " + "[" * 1000 + "]" * 1000, "config"),  # nested past PyYAML's recursion: 400, not 500
        ({"gpu_type": "tpu-v9"}, "gpu_type"),
    ],
)
def test_a_bad_config_is_400_naming_the_key_and_no_job_exists(
    api: Api, ann: User, dataset: str, config: object, where: str
) -> None:
    reply = api.start(ann, dataset, config=config)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["where"] == where
    assert jobs_of(api, ann) == []


def test_unknown_base_model_missing_or_rejected_dataset(api: Api, ann: User, dataset: str) -> None:
    reply = api.start(ann, dataset, base_model="gpt-17")
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "base_model"
    assert "tiny-llama" in reply.json()["error"]["message"]
    reply = api.start(ann, "ds_missing")
    assert reply.status_code == 404 and reply.json()["error"]["where"] == "dataset_id"
    rejected = api.upload(ann, b"nope\n")["dataset_id"]
    reply = api.start(ann, rejected)
    assert reply.status_code == 400 and "rejected" in reply.json()["error"]["message"]
    assert jobs_of(api, ann) == []


def test_every_problem_of_a_start_request_is_reported_at_once(api: Api, ann: User) -> None:
    rejected = api.upload(ann, b"nope\n")["dataset_id"]
    config = "learning_rate: 1e-4\nlr_scheduler: foo\ngpu_type: tpu-v9\n"
    reply = api.start(ann, rejected, base_model="gpt-17", config=config)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid"
    assert error["where"].split(", ") == [
        "learning_rate",
        "lr_scheduler",
        "base_model",
        "dataset_id",
        "gpu_type",
    ]
    message = error["message"]
    assert message.startswith("start request has 5 problems: ")
    assert "write 1.0e-4" in message and "one of linear, cosine" in message
    assert "unknown base model 'gpt-17'" in message and "is rejected" in message
    assert "no price for GPU type 'tpu-v9'" in message
    assert jobs_of(api, ann) == []


def test_a_missing_dataset_among_other_problems_is_one_of_them(api: Api, ann: User) -> None:
    reply = api.start(ann, "ds_missing", config={"epochs": 0})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["where"] == "epochs, dataset_id"
    assert "no dataset ds_missing" in reply.json()["error"]["message"]


def test_a_gpu_type_named_in_an_otherwise_bad_config_is_still_priced(
    api: Api, ann: User, dataset: str
) -> None:
    reply = api.start(ann, dataset, config={"epochs": 0, "gpu_type": "tpu-v9"})
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "epochs, gpu_type"
    reply = api.start(ann, dataset, config={"epochs": 0, "gpu_type": "A100 80GB"})  # no price for a bad name
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "epochs, gpu_type"
    assert "no price" not in reply.json()["error"]["message"]


def test_dry_run_checks_and_estimates_but_starts_nothing(api: Api, ann: User, dataset: str) -> None:
    reply = api.start(ann, dataset, dry_run=True)
    assert reply.status_code == 200
    body = reply.json()
    assert body["dry_run"] is True and body["job_id"] is None and body["estimate_usd_micros"] is not None
    assert jobs_of(api, ann) == []


def test_a_hub_base_model_not_converted_yet_warns_of_its_first_download(
    api: Api, ann: User, dataset: str
) -> None:
    reply = api.start(ann, dataset, base_model=HUB_MODEL, dry_run=True)
    assert reply.status_code == 200, reply.text
    assert any("downloads it from the Hugging Face hub" in w for w in reply.json()["warnings"])


class TestWhereTheHubIsOffline:
    """``HF_HUB_OFFLINE`` where jobs run: a hub model can only be used once it is converted in the bucket."""

    @pytest.fixture
    def api_settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, hub_offline=True)

    def test_settings_read_it_from_the_environment(self, tmp_path: Path) -> None:
        env = {"TUNE_HOME": str(tmp_path)}
        assert not Settings.from_env(env).hub_offline
        assert Settings.from_env({**env, "HF_HUB_OFFLINE": "1"}).hub_offline
        assert Settings.from_env({**env, "TRANSFORMERS_OFFLINE": "true"}).hub_offline

    @pytest.mark.parametrize("dry_run", [True, False])
    def test_a_hub_model_not_converted_is_refused_naming_the_reason(
        self, api: Api, ann: User, dataset: str, dry_run: bool
    ) -> None:
        reply = api.start(ann, dataset, base_model=HUB_MODEL, dry_run=dry_run)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert (error["code"], error["where"]) == ("base_model_unavailable", "base_model")
        assert "HF_HUB_OFFLINE" in error["message"] and "Qwen/Qwen2.5-0.5B-Instruct" in error["message"]
        assert jobs_of(api, ann) == []

    def test_it_is_one_of_the_problems_reported_together(self, api: Api, ann: User, dataset: str) -> None:
        reply = api.start(ann, dataset, base_model=HUB_MODEL, config={"epochs": 0}, dry_run=True)
        assert reply.status_code == 400 and reply.json()["error"]["where"] == "epochs, base_model"

    def test_a_hub_model_already_converted_in_the_bucket_is_fine(
        self, api: Api, ann: User, dataset: str
    ) -> None:
        api.rt.bucket.write(layout.base_model_marker(HUB_MODEL), b"{}")
        reply = api.start(ann, dataset, base_model=HUB_MODEL, dry_run=True)
        assert reply.status_code == 200, reply.text
        assert reply.json()["warnings"] == []

    def test_built_in_models_need_no_hub(self, api: Api, ann: User, dataset: str) -> None:
        reply = api.start(ann, dataset, dry_run=True)
        assert reply.status_code == 200 and reply.json()["warnings"] == []


def test_the_concurrent_jobs_quota_is_403(api: Api, ann: User, dataset: str) -> None:
    api.rt.platform.set_quota(ann.user_id, 1, 1 << 30, api.rt.clock())
    api.rt.committed("platform")
    first = api.job(ann, dataset)
    reply = api.start(ann, dataset)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "quota_exceeded"
    api.client.post(f"/fine-tune/{first}/stop", headers=ann.headers)
    assert api.start(ann, dataset).status_code == 201


def test_over_budget_needs_force(api: Api, ann: User, dataset: str) -> None:
    api.client.put("/billing/budget", json={"monthly_limit_usd_micros": 1}, headers=ann.headers)
    config = {"epochs": 50, "gpu_type": "h200"}
    reply = api.start(ann, dataset, config=config)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "over_budget"
    reply = api.start(ann, dataset, config=config, force=True)
    assert reply.status_code == 201 and reply.json()["warnings"]


def test_list_filters_by_state(api: Api, ann: User, dataset: str) -> None:
    first, second = api.job(ann, dataset), api.job(ann, dataset)
    api.client.post(f"/fine-tune/{first}/stop", headers=ann.headers)
    assert [j["job_id"] for j in jobs_of(api, ann, state="stopped")] == [first]
    assert [j["job_id"] for j in jobs_of(api, ann, state="submitted")] == [second]
    reply = api.client.get(f"/fine-tune/{ann.user_id}/list", params={"state": "asleep"}, headers=ann.headers)
    assert reply.status_code == 400 and reply.json()["error"]["where"] == "state"


def test_stop_a_running_job_then_it_is_stopping(api: Api, ann: User, dataset: str) -> None:
    job_id = api.job(ann, dataset)
    app = api.rt.user_app(ann.user_id)
    app.queue_job(job_id, api.rt.clock())
    app.start_job(job_id, 1, api.rt.clock())
    api.settle(ann)
    reply = api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers)
    assert reply.status_code == 200 and reply.json() == {"job_id": job_id, "status": "stopping"}
    assert api.client.get(f"/fine-tune/{job_id}/status", headers=ann.headers).json()["status"] == "stopping"


def test_pause_a_running_job_then_resume_it_and_the_doors_refuse_what_cannot_be(
    api: Api, ann: User, dataset: str
) -> None:
    job_id = api.job(ann, dataset)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    api.settle(ann)
    reply = api.client.post(f"/fine-tune/{job_id}/resume", headers=ann.headers)
    assert reply.status_code == 409 and "only a paused job can be resumed" in reply.json()["error"]["message"]
    reply = api.client.post(f"/fine-tune/{job_id}/pause", headers=ann.headers)
    assert reply.status_code == 200 and reply.json() == {"job_id": job_id, "status": "pausing"}
    app.mark_paused(job_id, now)
    api.settle(ann)
    assert [j["job_id"] for j in jobs_of(api, ann, state="paused")] == [job_id]
    reply = api.client.post(f"/fine-tune/{job_id}/resume", headers=ann.headers)
    assert reply.status_code == 200 and reply.json() == {"job_id": job_id, "status": "queued"}
    api.client.post(f"/fine-tune/{job_id}/stop", headers=ann.headers)
    reply = api.client.post(f"/fine-tune/{job_id}/pause", headers=ann.headers)
    assert reply.status_code == 409 and "it has ended" in reply.json()["error"]["message"]
    schema = api.client.get("/schema/openapi.json").json()["paths"]
    assert schema["/fine-tune/{job_id}/pause"]["post"]["operationId"] == "pause_job"
    assert "409" in schema["/fine-tune/{job_id}/resume"]["post"]["responses"]


def test_events_tell_the_jobs_history(api: Api, ann: User, dataset: str) -> None:
    job_id = api.job(ann, dataset)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    app.report_progress(job_id, 1, 5, 10, 0.5, 1.25, 640, now)
    app.save_checkpoint(job_id, 1, 5, f"users/{ann.user_id}/jobs/{job_id}/checkpoints/5", now)
    events = api.client.get(f"/fine-tune/{job_id}/events", headers=ann.headers).json()["events"]
    assert [e["type"] for e in events] == [
        "Submitted",
        "Queued",
        "Started",
        "ProgressReported",
        "CheckpointSaved",
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[3]["data"]["loss"] == 1.25 and "step 5/10" in events[3]["summary"]
    assert all(e["at"].endswith("Z") for e in events)


def test_the_log_of_a_job_is_its_attempts_logs_in_order(api: Api, ann: User, dataset: str) -> None:
    """Each attempt writes its own ``attempts/<n>/job.log``; the API reads them as one log, and a
    follow goes on into the next attempt's log."""
    job_id = api.job(ann, dataset)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock
    app.queue_job(job_id, now())
    app.start_job(job_id, 1, now())
    api.settle(ann)
    first = layout.attempt_log(ann.user_id, job_id, 1)
    api.rt.bucket.write(first, b"one a\none b\n")
    assert api.client.get(f"/fine-tune/{job_id}/logs", headers=ann.headers).text == "one a\none b\n"

    def next_attempt() -> None:
        app.retry_job(job_id, 2, "the runner was lost", now())
        app.start_job(job_id, 2, now())
        api.settle(ann)
        api.rt.bucket.write(layout.attempt_log(ann.user_id, job_id, 2), b"two a\n")
        app.mark_failed(job_id, "done", now())
        api.settle(ann)

    timer = threading.Timer(0.3, next_attempt)
    timer.start()
    with api.client.stream(
        "GET", f"/fine-tune/{job_id}/logs", params={"tail": 1, "follow": "true"}, headers=ann.headers
    ) as stream:
        text = "".join(stream.iter_text())
    timer.join()
    assert text == "one b\ntwo a\n"
    reply = api.client.get(f"/fine-tune/{job_id}/logs", params={"tail": 2}, headers=ann.headers)
    assert reply.text == "one b\ntwo a\n"


def test_logs_tail_and_follow(api: Api, ann: User, dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = api.job(ann, dataset)
    log = f"users/{ann.user_id}/jobs/{job_id}/job.log"
    assert api.client.get(f"/fine-tune/{job_id}/logs", headers=ann.headers).text == ""
    api.rt.bucket.write(log, b"".join(f"line {i}\n".encode() for i in range(10)))
    reply = api.client.get(f"/fine-tune/{job_id}/logs", params={"tail": 3}, headers=ann.headers)
    assert reply.status_code == 200 and reply.text == "line 7\nline 8\nline 9\n"
    assert reply.headers["content-type"].startswith("text/plain")
    assert api.client.get(f"/fine-tune/{job_id}/logs", headers=ann.headers).text.count("\n") == 10

    # The log is read once for the tail, then once per poll of the follow: the runner appends
    # only once the follow polls (the tail is taken), and ends the job after it appended.
    opened = threading.Semaphore(0)
    open_read = api.rt.bucket.open_read

    def counted_open_read(name: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if name == log:
            opened.release()
        return open_read(name, *args, **kwargs)

    monkeypatch.setattr(api.rt.bucket, "open_read", counted_open_read)

    def runner() -> None:  # appends to the log, then the job ends
        for _ in ("the tail", "the follow's first poll"):
            assert opened.acquire(timeout=60), "the follow never read the log"
        api.rt.bucket.write(log, api.rt.bucket.read(log) + b"line 10\n")
        api.rt.user_app(ann.user_id).request_stop(job_id, "done", api.rt.clock())
        api.settle(ann)

    thread = threading.Thread(target=runner)
    thread.start()
    with api.client.stream(
        "GET", f"/fine-tune/{job_id}/logs", params={"tail": 1, "follow": "true"}, headers=ann.headers
    ) as stream:
        text = "".join(stream.iter_text())
    thread.join()
    assert text == "line 9\nline 10\n"


def test_checkpoints_list_step_and_losses_from_the_attempts_metrics(
    api: Api, ann: User, bob: User, dataset: str
) -> None:
    """Each checkpoint with the train loss and (validation configured) the eval loss at its step, from
    the metrics of the attempt that saved it; one pruned from the bucket is listed as not available."""
    job_id = api.job(ann, dataset)
    app, now, bucket = api.rt.user_app(ann.user_id), api.rt.clock, api.rt.bucket
    app.queue_job(job_id, now())
    app.start_job(job_id, 1, now())
    metrics = [
        {"event": "step", "step": 5, "loss": 2.5, "attempt": 1},
        {"event": "eval", "step": 5, "eval_loss": 2.75, "attempt": 1},
        {"event": "step", "step": 10, "loss": 2.0, "attempt": 1},
    ]
    bucket.write(
        layout.attempt_metrics(ann.user_id, job_id, 1),
        b"".join(json.dumps(m).encode() + b"\n" for m in metrics),
    )
    for step in (5, 10):
        prefix = layout.attempt_checkpoint_prefix(ann.user_id, job_id, 1, step)
        bucket.write(prefix + "adapter_model.safetensors", b"w")
        app.save_checkpoint(job_id, 1, step, prefix, now())
    app.retry_job(job_id, 2, "the runner was lost", now())
    app.start_job(job_id, 2, now())
    bucket.write(
        layout.attempt_metrics(ann.user_id, job_id, 2), b'{"step": 15, "loss": 1.5, "attempt": 2}\n{"ste'
    )
    prefix = layout.attempt_checkpoint_prefix(ann.user_id, job_id, 2, 15)
    bucket.write(prefix + "adapter_model.safetensors", b"w")
    app.save_checkpoint(job_id, 2, 15, prefix, now())
    bucket.delete_prefix(layout.attempt_checkpoint_prefix(ann.user_id, job_id, 1, 5))  # pruned
    api.settle(ann)
    reply = api.client.get(f"/fine-tune/{job_id}/checkpoints", headers=ann.headers)
    assert reply.status_code == 200, reply.text
    rows = reply.json()["checkpoints"]
    assert [(r["checkpoint_id"], r["attempt"], r["step"]) for r in rows] == [
        (f"{job_id}:5", 1, 5),
        (f"{job_id}:10", 1, 10),
        (f"{job_id}:15", 2, 15),
    ]
    assert [(r["train_loss"], r.get("eval_loss"), r["available"]) for r in rows] == [
        (2.5, 2.75, False),
        (2.0, None, True),
        (1.5, None, True),
    ]
    assert api.client.get(f"/fine-tune/{job_id}/checkpoints", headers=bob.headers).status_code == 404
    assert api.client.get(f"/fine-tune/{job_id}/checkpoints").status_code == 401


def test_a_job_that_ended_without_a_model_shows_no_model_id(api: Api, ann: User, dataset: str) -> None:
    """Issue 14: never a model id that answers 404. A job cancelled (or stopped before its first
    checkpoint) has none; a job stopped with its checkpoint published shows its model's id."""
    cancelled = api.job(ann, dataset)
    assert api.client.post(f"/fine-tune/{cancelled}/stop", headers=ann.headers).status_code == 200
    status = api.client.get(f"/fine-tune/{cancelled}/status", headers=ann.headers).json()
    assert status["status"] == "stopped" and status.get("model_id") is None

    stopped = api.job(ann, dataset)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock
    model_id = app.get_job(stopped).model_id
    app.queue_job(stopped, now())
    app.start_job(stopped, 1, now())
    weights = ModelWeights(
        kind="lora",
        weights_prefix=layout.weights_prefix(ann.user_id, model_id),
        sha256="0" * 64,
        size_bytes=10,
        metrics={"steps": 5.0},
    )
    app.mark_stopped(stopped, now(), step=5, weights=weights)
    api.settle(ann)
    assert api.client.get(f"/fine-tune/{stopped}/status", headers=ann.headers).json()["model_id"] == model_id
    assert api.client.get(f"/models/{model_id}", headers=ann.headers).status_code == 200


def test_the_job_list_shows_no_model_id_where_a_job_has_no_model(api: Api, ann: User, dataset: str) -> None:
    """Issue 14: `tune list` agrees with the status: a cancelled or failed job lists no model id, a
    job whose model answers lists it; the stored view keeps the id it was submitted with."""
    cancelled = api.job(ann, dataset)
    assert api.client.post(f"/fine-tune/{cancelled}/stop", headers=ann.headers).status_code == 200
    failed, running = api.job(ann, dataset), api.job(ann, dataset)
    app, now = api.rt.user_app(ann.user_id), api.rt.clock
    for job_id in (failed, running):
        app.queue_job(job_id, now())
        app.start_job(job_id, 1, now())
    app.mark_failed(failed, "out of memory", now())
    api.settle(ann)

    for query in ("", "?limit=10", "?state=stopped", "?state=failed"):
        rows = api.client.get(f"/fine-tune/{ann.user_id}/list{query}", headers=ann.headers).json()["jobs"]
        shown = {r["job_id"]: r.get("model_id") for r in rows if r["job_id"] in (cancelled, failed)}
        assert shown and set(shown.values()) == {None}, (query, rows)
    rows = api.client.get(f"/fine-tune/{ann.user_id}/list", headers=ann.headers).json()["jobs"]
    assert {r["job_id"]: r["model_id"] for r in rows}[running] == app.get_job(running).model_id  # not ended
    stored = api.rt.view_json(layout.job_status(ann.user_id, cancelled)) or {}
    assert stored["model_id"] == app.get_job(cancelled).model_id  # the views are unchanged


def test_a_validation_dataset_must_be_the_callers_validated_and_in_the_training_format(
    api: Api, ann: User, dataset: str
) -> None:
    bob = api.user("bob")
    bobs = api.upload(bob, chat_lines(start=100))["dataset_id"]
    rejected = api.upload(ann, b"nope\n")["dataset_id"]
    completions = api.upload(ann, b'{"prompt": "2+2?", "completion": " 4"}\n' * 10)["dataset_id"]
    refused = {
        bobs: (404, "validation dataset: no dataset"),  # another user's is none of the caller's
        "ds_missing": (404, "validation dataset: no dataset ds_missing"),
        rejected: (400, "rejected; only a validated dataset"),
        dataset: (400, "the validation dataset is the training dataset"),
        completions: (400, "in the prompt_completion format, the training dataset"),
    }
    for validation, (status, message) in refused.items():
        reply = api.start(ann, dataset, config={"epochs": 1, "validation_dataset_id": validation})
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert error["where"] == "validation_dataset_id" and message in error["message"], error
    reply = api.start(ann, dataset, config={"validation_dataset_id": bobs, "validation_split": 0.1})
    assert reply.status_code == 400 and "not both" in reply.text
    assert jobs_of(api, ann) == []  # no job half-written by any of them

    validation = api.upload(ann, chat_lines(start=50))["dataset_id"]
    config = {"epochs": 1, "validation_dataset_id": validation, "early_stopping_patience": 2}
    reply = api.start(ann, dataset, config=config)
    assert reply.status_code == 201, reply.text
    assert reply.json()["config"]["validation_dataset_id"] == validation
    assert reply.json()["config"]["early_stopping_patience"] == 2
