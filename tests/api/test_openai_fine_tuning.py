"""OpenAI-compatible fine-tuning (``/v1/files``, ``/v1/fine_tuning/jobs``) through the official client.

One live server (uvicorn in a thread) with no dispatcher: a job stays ``validating_files`` until
the test moves it on as a runner would (queued, started, progress, a checkpoint). The same jobs
show at ``/fine-tune``; another user's files and jobs answer 404; errors come in OpenAI's shape.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.services import AccountService
from api.services.keys import KeyService
from domain.model import ModelWeights
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from storage import layout
from tests.api.conftest import chat_lines, declare_cluster, make_settings
from tests.serving import BASE, LiveServer

openai = pytest.importorskip("openai")


class Served:
    def __init__(self, url: str, rt: Runtime, users: dict[str, str], keys: dict[str, str]) -> None:
        self.url, self.rt, self.users, self.keys = url, rt, users, keys

    def client(self, who: str = "ann") -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[who], max_retries=0, timeout=60)

    def http(self, who: str = "ann") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("ft")
    settings = make_settings(home)
    rt = Runtime(settings)
    bootstrap(rt)
    declare_cluster(rt)
    accounts = AccountService(rt)
    users = {
        "ann": accounts.create_user("ann@example.com", "pw-ann-correct horse", "user"),
        "bob": accounts.create_user("bob@example.com", "pw-bob-correct horse", "user"),
    }
    for uid in users.values():  # every test leaves its jobs waiting: no dispatcher runs them
        rt.platform.set_quota(uid, 100, 1 << 30, rt.clock())
    rt.committed("platform")
    keys = {who: KeyService(rt, uid).create("ci").key for who, uid in users.items()}  # API keys as bearers
    with LiveServer(create_app(settings, runtime=rt)) as server:
        yield Served(server.url, rt, users, keys)


def _upload(client: Any, data: bytes | None = None, name: str = "train.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(data or chat_lines())), purpose="fine-tune")


def _job(served: Served, **kw: Any) -> Any:
    client = served.client()
    file = _upload(client)
    return client.fine_tuning.jobs.create(model=BASE, training_file=file.id, **kw)


def test_a_file_is_a_dataset_validated_line_by_line(served: Served) -> None:
    client = served.client()
    file = _upload(client, name="facts.jsonl")
    assert file.object == "file" and file.purpose == "fine-tune" and file.status == "processed"
    assert file.filename == "facts.jsonl" and file.bytes == len(chat_lines()) and file.created_at > 0
    assert client.files.retrieve(file.id).id == file.id
    dataset = served.http().get(f"/datasets/{file.id}").json()
    assert dataset["status"] == "validated" and dataset["rows"] == 12  # the same dataset at /datasets

    bad = _upload(client, chat_lines(2) + b'{"messages": "no"}\n' + b"not json\n")
    assert bad.status == "error"
    assert "line 3" in bad.status_details and "line 4" in bad.status_details

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("t.jsonl", io.BytesIO(chat_lines())), purpose="batch")
    assert refused.value.body["param"] == "purpose"

    deleted = client.files.delete(bad.id)
    assert deleted.deleted and deleted.id == bad.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(bad.id)


def test_files_are_listed_newest_first_in_pages(served: Served) -> None:
    client = served.client("bob")
    ids = [_upload(client).id for _ in range(3)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    second = client.files.list(limit=2, after=first.data[-1].id)
    assert ids[0] in [f.id for f in second.data]
    every = [f.id for f in client.files.list(limit=2)]  # the client walks the pages with `after`
    assert set(ids) <= set(every) and len(every) == len(set(every))
    oldest = client.files.list(order="asc", limit=100)
    assert [f.id for f in oldest.data if f.id in ids] == ids


def test_a_job_created_through_v1_is_the_job_of_fine_tune(served: Served) -> None:
    client = served.client()
    train, valid = _upload(client), _upload(client, chat_lines(10, start=50))
    job = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=train.id,
        validation_file=valid.id,
        hyperparameters={"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        suffix="my-model",
        seed=7,
        metadata={"team": "nlp"},
        extra_body={"config": {"max_steps": 2}},
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files"
    assert job.model == BASE and job.training_file == train.id and job.validation_file == valid.id
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4  # auto: the default
    assert job.hyperparameters.learning_rate_multiplier == 0.5 and job.seed == 7
    assert job.method.type == "supervised" and job.method.supervised.hyperparameters.n_epochs == 2
    assert job.metadata == {"team": "nlp"} and job.fine_tuned_model is None and job.finished_at is None
    assert job.organization_id == served.users["ann"]

    status = served.http().get(f"/fine-tune/{job.id}/status").json()
    assert status["dataset_id"] == train.id and status["base_model"] == BASE
    listed = served.http().get(f"/fine-tune/{served.users['ann']}/list").json()["jobs"]
    assert job.id in [row["job_id"] for row in listed]
    config = served.rt.bucket.read(layout.job_config(served.users["ann"], job.id)).decode()
    assert "epochs: 2" in config and "seed: 7" in config and "learning_rate: 0.0001" in config
    assert "max_steps: 2" in config and f"validation_dataset_id: {valid.id}" in config  # trained on

    again = client.fine_tuning.jobs.retrieve(job.id)
    assert again.id == job.id and again.user_provided_suffix == "my-model"  # type: ignore[attr-defined]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert not any("validation_file" in m for m in messages)  # no more "stored but not used" note


def test_method_hyperparameters_win_and_auto_keeps_the_defaults(served: Served) -> None:
    job = _job(
        served,
        hyperparameters={"n_epochs": 5},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}},
    )
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 2
    plain = _job(served, hyperparameters={"n_epochs": "auto", "learning_rate_multiplier": "auto"})
    assert plain.hyperparameters.n_epochs == 3 and plain.hyperparameters.learning_rate_multiplier == 1
    assert plain.seed == 42


def test_refusals_name_openai_parameters(served: Served) -> None:
    client = served.client()
    file = _upload(client)
    with pytest.raises(openai.BadRequestError) as rl:
        client.fine_tuning.jobs.create(model=BASE, training_file=file.id, method={"type": "reinforcement"})
    assert rl.value.body["param"] == "method.type" and "not supported yet" in rl.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as dpo:  # a chat file has no preference pairs
        client.fine_tuning.jobs.create(model=BASE, training_file=file.id, method={"type": "dpo"})
    assert dpo.value.body["param"] == "training_file" and dpo.value.body["code"] == "dataset_mismatch"
    assert (
        f"objective dpo trains on a preference dataset, but dataset {file.id} is chat"
        in (dpo.value.body["message"])
    )
    with pytest.raises(openai.BadRequestError) as model:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
    assert model.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(model=BASE, training_file="ds-missing")
    assert missing.value.body["param"] == "training_file"
    with pytest.raises(openai.NotFoundError) as valid:
        client.fine_tuning.jobs.create(model=BASE, training_file=file.id, validation_file="ds-missing")
    assert valid.value.body["param"] == "validation_file"
    with pytest.raises(openai.BadRequestError) as epochs:
        client.fine_tuning.jobs.create(model=BASE, training_file=file.id, hyperparameters={"n_epochs": 0})
    assert epochs.value.body["param"].startswith("hyperparameters")


def test_a_dpo_job_on_a_preference_file_shows_its_method_and_beta(served: Served) -> None:
    from tests.api.test_preference_jobs import preference_lines

    client = served.client()
    file = _upload(client, preference_lines(), name="pairs.jsonl")
    assert file.status == "processed"
    hyperparameters = {"beta": 0.25, "n_epochs": 2, "learning_rate_multiplier": "auto"}

    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=file.id, method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}
    )

    assert job.method.type == "dpo" and job.method.supervised is None
    assert job.method.dpo.hyperparameters.beta == 0.25 and job.method.dpo.hyperparameters.n_epochs == 2
    assert client.fine_tuning.jobs.retrieve(job.id).method.dpo.hyperparameters.beta == 0.25  # from its config
    auto = client.fine_tuning.jobs.create(model=BASE, training_file=file.id, method={"type": "dpo"})
    assert auto.method.dpo.hyperparameters.beta == 0.1  # the default
    with pytest.raises(openai.UnprocessableEntityError) as sft:  # supervised on pairs
        client.fine_tuning.jobs.create(model=BASE, training_file=file.id)
    assert (
        sft.value.body["param"] == "training_file"
        and "train it with objective dpo" in sft.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError) as beta:
        client.fine_tuning.jobs.create(
            model=BASE, training_file=file.id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}}
        )
    assert beta.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as both:
        client.fine_tuning.jobs.create(
            model=BASE,
            training_file=file.id,
            method={"type": "dpo"},
            extra_body={"config": {"objective": "sft"}},
        )
    assert both.value.body["param"] == "method.type"


def test_jobs_list_in_pages_with_limit_and_after(served: Served) -> None:
    client = served.client()
    made = [_job(served).id for _ in range(3)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == made[::-1][:2] and first.has_more
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == made[0]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.list(after="ftjob-none")


def test_events_and_checkpoints_follow_the_run(served: Served) -> None:
    client = served.client()
    job = _job(served)
    uid = served.users["ann"]
    app, now = served.rt.user_app(uid), served.rt.clock()
    app.queue_job(job.id, now)
    app.start_job(job.id, 1, now)
    for step in (1, 2):
        app.report_progress(job.id, 1, step, 2, step / 2, 2.0 / step, 100 * step, now)
    path = layout.attempt_checkpoint_prefix(uid, job.id, 1, 2)
    served.rt.bucket.write(f"{path}adapter_model.safetensors", b"weights")
    metrics = json.dumps({"attempt": 1, "step": 2, "loss": 1.0}) + "\n"
    evaluated = {"event": "eval", "attempt": 1, "step": 2, "eval_loss": 1.25, "at": now.isoformat()}
    metrics += json.dumps(evaluated) + "\n"
    served.rt.bucket.write(layout.attempt_metrics(uid, job.id, 1), metrics.encode())
    app.save_checkpoint(job.id, 1, 2, path, now)
    served.rt.committed(f"users/{uid}")

    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert all(e.object == "fine_tuning.job.event" for e in events)
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == [2, 2, 1]  # newest first: the validation loss after the progress of its step
    assert events[0].type == "metrics" and events[0].data == {
        "step": 2,
        "train_loss": 1.0,
        "valid_loss": 1.25,
    }
    assert events[0].message == "Step 2: validation loss=1.2500"
    assert events[-1].message.startswith("Created fine-tuning job")
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    after = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert page.has_more and after.data[0].id == events[2].id

    points = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [p.step_number for p in points] == [2]
    assert points[0].fine_tuning_job_id == job.id and points[0].metrics.train_loss == 1.0
    assert points[0].metrics.valid_loss == 1.25
    assert points[0].object == "fine_tuning.job.checkpoint" and points[0].id == f"{job.id}:2"

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "running"  # stopping: it checkpoints first
    app.mark_stopped(job.id, now, step=2, reason="cancelled by the user")
    served.rt.committed(f"users/{uid}")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_a_queued_job_is_cancelled_at_once(served: Served) -> None:
    client = served.client()
    job = _job(served)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert served.http().get(f"/fine-tune/{job.id}/status").json()["status"] == "stopped"


def test_create_a_job_on_tiny_llama_pause_resume_then_retrieve_its_fine_tuned_model(served: Served) -> None:
    """Issue 15: pause and resume through the official client; the test plays the runner's part."""
    client = served.client()
    job = _job(served)
    assert job.model == BASE == "tiny-llama"
    uid = served.users["ann"]
    app, now = served.rt.user_app(uid), served.rt.clock()
    app.queue_job(job.id, now)
    app.start_job(job.id, 1, now, lease="lease-1")
    path = layout.attempt_checkpoint_prefix(uid, job.id, 1, 2)
    app.save_checkpoint(job.id, 1, 2, path, now, lease="lease-1")
    served.rt.committed(f"users/{uid}")

    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused" and paused.fine_tuned_model is None  # pausing: it checkpoints first
    assert served.http().get(f"/fine-tune/{job.id}/status").json()["status"] == "pausing"
    app.mark_paused(job.id, served.rt.clock(), lease="lease-1")  # its runner saved the checkpoint and ended
    served.rt.committed(f"users/{uid}")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)  # paused already

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)  # only a paused job resumes
    app.start_job(job.id, 2, served.rt.clock(), lease="lease-2")  # the next attempt, the dispatcher's part
    model_id = app.get_job(job.id).model_id
    weights = ModelWeights(
        kind="lora",
        weights_prefix=f"users/{uid}/models/{model_id}/weights/",
        sha256="0" * 64,
        size_bytes=1,
        metrics={"loss": 0.5},
    )
    # the runner's part at the time it happens (events list by time: a stale clock put it before the resume)
    app.mark_succeeded(job.id, served.rt.clock(), metrics={"loss": 0.5}, weights=weights, lease="lease-2")
    served.rt.committed(f"users/{uid}")

    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == model_id
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data][::-1]
    lifecycle = [m for m in messages if m.startswith(("Pausing", "The job was", "The job has"))]
    assert lifecycle == [
        "Pausing the job: it saves a checkpoint, then releases its hardware",
        "The job was paused at step 2: it holds no hardware and is billed nothing until it resumes",
        "The job was resumed: a new attempt continues from its last checkpoint",
        "The job has successfully completed",  # no early stop
    ]
    with pytest.raises(openai.ConflictError) as refused:
        client.fine_tuning.jobs.pause(job.id)
    assert "has ended" in refused.value.message


def test_another_users_files_and_jobs_are_not_found(served: Served) -> None:
    job = _job(served)
    file_id = job.training_file
    bob = served.client("bob")
    for call in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.delete(file_id),
        lambda: bob.fine_tuning.jobs.retrieve(job.id),
        lambda: bob.fine_tuning.jobs.cancel(job.id),
        lambda: bob.fine_tuning.jobs.list_events(job.id),
        lambda: bob.fine_tuning.jobs.checkpoints.list(job.id),
        lambda: bob.fine_tuning.jobs.create(model=BASE, training_file=file_id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert job.id not in [j.id for j in bob.fine_tuning.jobs.list(limit=100).data]
    assert file_id not in [f.id for f in bob.files.list(limit=100).data]
    assert served.client().fine_tuning.jobs.retrieve(job.id).status == "validating_files"


def test_an_early_stop_says_so_in_the_events(served: Served) -> None:
    """The runner records ``early_stopped_at_step`` in the metrics of a run early stopping ended."""
    client = served.client()
    job = _job(served)
    uid = served.users["ann"]
    app, now = served.rt.user_app(uid), served.rt.clock()
    app.queue_job(job.id, now)
    app.start_job(job.id, 1, now, lease="lease-1")
    model_id = app.get_job(job.id).model_id
    metrics = {"eval_loss": 1.03, "best_step": 3.0, "early_stopped_at_step": 9.0}
    weights = ModelWeights(
        kind="lora", weights_prefix=f"users/{uid}/models/{model_id}/weights/", sha256="0" * 64,
        size_bytes=1, metrics=metrics,
    )  # fmt: skip
    app.mark_succeeded(job.id, now, metrics=metrics, weights=weights, lease="lease-1")
    served.rt.committed(f"users/{uid}")
    newest = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert newest.message == (
        "The job has successfully completed: stopped early at step 9, the validation loss stopped "
        "improving; the model is the best checkpoint's, step 3"
    )
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
