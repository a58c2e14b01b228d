"""The dry run's estimate: the trainer's steps, priced from the caller's own earlier jobs, as a range."""

from __future__ import annotations

from typing import Any

from domain.model import ModelWeights
from domain.money import cost_usd_micros, period_of
from tests.api.conftest import Api, User
from tests.usage import meter

GPU = {"gpu_type": "a100-80gb", "epochs": 2, "batch_size": 2}
PRICE = 2_100_000  # the default a100-80gb price, µ$ an hour


def dry_run(api: Api, user: User, dataset_id: str, **config: Any) -> dict[str, Any]:
    reply = api.start(user, dataset_id, config={**GPU, **config}, dry_run=True)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def finished_job(
    api: Api, user: User, dataset_id: str, *, billed_ms: int, train_seconds: float, steps: int | None = None
) -> str:
    """A job like ``GPU`` on ``dataset_id`` that succeeded in its first attempt, billed ``billed_ms``,
    after ``steps`` (default: all it planned)."""
    steps = steps if steps is not None else dry_run(api, user, dataset_id)["estimate_steps"]
    reply = api.start(user, dataset_id, config=GPU)
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["job_id"]
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    meter(app, job_id, 1, 0, 3, "a100-80gb", 1, billed_ms, PRICE, period_of(now), now)
    model_id = app.get_job(job_id).model_id
    weights = ModelWeights(
        kind="lora",
        weights_prefix=f"users/{user.user_id}/models/{model_id}/weights/",
        sha256="0" * 64,
        size_bytes=1,
    )
    metrics = {"train_seconds": train_seconds, "tokens": 999.0, "steps": float(steps)}
    app.mark_succeeded(job_id, now, metrics=metrics, weights=weights)
    api.settle(user)
    return job_id  # type: ignore[no-any-return]


def test_without_earlier_jobs_the_estimate_is_an_assumption_with_a_wide_range(api: Api, ann: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    body = dry_run(api, ann, dataset_id, max_steps=400)
    assert body["estimate_source"] == "assumed" and body["estimate_basis"] == "assumed"
    assert body["estimate_steps"] == 400  # max_steps overrides the epochs, even upwards
    assert body["estimate_low_usd_micros"] < body["estimate_usd_micros"] < body["estimate_high_usd_micros"]


def test_after_one_job_the_same_job_is_estimated_at_what_it_cost(api: Api, ann: User, bob: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    finished_job(api, ann, dataset_id, billed_ms=600_000, train_seconds=120.0)

    body = dry_run(api, ann, dataset_id)
    assert body["estimate_source"] == "measured" and body["estimate_basis"] == "measured from 1 job"
    assert body["estimate_usd_micros"] == cost_usd_micros(600_000, 1, PRICE)
    assert body["estimate_low_usd_micros"] == cost_usd_micros(480_000, 1, PRICE)
    assert body["estimate_high_usd_micros"] == cost_usd_micros(750_000, 1, PRICE)
    # twice the epochs: the overhead (480 s) once, the training (120 s) twice
    assert dry_run(api, ann, dataset_id, epochs=4)["estimate_usd_micros"] == cost_usd_micros(
        720_000, 1, PRICE
    )
    # another GPU type, another method: no evidence
    assert dry_run(api, ann, dataset_id, gpu_type="h200")["estimate_source"] == "assumed"
    assert dry_run(api, ann, dataset_id, method="full")["estimate_source"] == "assumed"
    # another user learns nothing of ann's jobs
    assert dry_run(api, bob, api.upload(bob)["dataset_id"])["estimate_source"] == "assumed"


def test_an_early_stopped_job_s_pace_counts_the_steps_it_trained(api: Api, ann: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    planned = dry_run(api, ann, dataset_id)["estimate_steps"]
    assert planned % 2 == 0
    # it stopped early, half way: its 120 s of training were half the plan's tokens
    finished_job(api, ann, dataset_id, billed_ms=600_000, train_seconds=120.0, steps=planned // 2)
    assert dry_run(api, ann, dataset_id)["estimate_usd_micros"] == cost_usd_micros(720_000, 1, PRICE)


def test_the_budget_check_uses_the_high_end_of_the_range(api: Api, ann: User) -> None:
    dataset_id = api.upload(ann)["dataset_id"]
    finished_job(api, ann, dataset_id, billed_ms=600_000, train_seconds=120.0)
    spent = cost_usd_micros(600_000, 1, PRICE)
    expected = cost_usd_micros(600_000, 1, PRICE)
    reply = api.client.put(
        "/billing/budget", json={"monthly_limit_usd_micros": spent + expected + 10}, headers=ann.headers
    )
    assert reply.status_code == 200, reply.text

    reply = api.start(ann, dataset_id, config=GPU, dry_run=True)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "over_budget", reply.text
    assert api.start(ann, dataset_id, config=GPU, dry_run=True, force=True).status_code == 200
