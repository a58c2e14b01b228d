"""Every route of the OpenAPI schema, walked as nobody (401) and as another user (404 for ids).

Another user's job, model, dataset or user id answers exactly like an unknown id,
and nothing of the first user's changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain.money import period_of
from tests.api.conftest import Api, User
from tests.usage import meter

PUBLIC = {("POST", "/auth/login"), ("GET", "/health")}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/fine-tune/{user_id}/start"): {"base_model": "tiny-llama", "dataset_id": "{dataset_id}"},
    ("PUT", "/billing/budget"): {"monthly_limit_usd_micros": 1_000_000},
    ("POST", "/keys"): {"name": "isolation"},
    ("POST", "/v1/chat/completions"): {
        "model": "{model_id}",
        "messages": [{"role": "user", "content": "hi"}],
    },
    ("POST", "/v1/fine_tuning/jobs"): {"model": "tiny-llama", "training_file": "{file_id}"},
}
ANNS_BUDGET = 7_000_000
REPORT = ("GET", "/billing/report")  # of the current month: the one that holds usage


def operations(api: Api) -> list[tuple[str, str]]:
    schema = api.client.get("/schema/openapi.json").json()
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def fill(template: str, ids: dict[str, str]) -> str:
    return template.format(**ids)


def call(api: Api, method: str, template: str, ids: dict[str, str], headers: dict[str, str]) -> Any:
    body = BODIES.get((method, template))
    json = {k: fill(v, ids) if isinstance(v, str) else v for k, v in body.items()} if body else None
    content = b'{"messages": [{"role": "user", "content": "hi"}]}\n' if template.endswith("/upload") else None
    params = {"month": period_of(api.rt.clock())} if (method, template) == REPORT else None
    return api.client.request(
        method, fill(template, ids), json=json, content=content, params=params, headers=headers
    )


def test_the_schema_lists_every_route(api: Api) -> None:
    assert set(operations(api)) == {
        ("POST", "/auth/login"),
        ("GET", "/health"),
        ("GET", "/hardware"),
        ("POST", "/fine-tune/{user_id}/start"),
        ("GET", "/fine-tune/{user_id}/list"),
        ("GET", "/fine-tune/{job_id}/status"),
        ("POST", "/fine-tune/{job_id}/stop"),
        ("POST", "/fine-tune/{job_id}/pause"),
        ("POST", "/fine-tune/{job_id}/resume"),
        ("GET", "/fine-tune/{job_id}/events"),
        ("GET", "/fine-tune/{job_id}/logs"),
        ("GET", "/fine-tune/{job_id}/checkpoints"),
        ("GET", "/fine-tune/{job_id}/metrics"),
        ("GET", "/models/{user_id}/list"),
        ("GET", "/models/{model_id}"),
        ("GET", "/models/{model_id}/download"),
        ("HEAD", "/models/{model_id}/download"),
        ("DELETE", "/models/{model_id}"),
        ("POST", "/datasets/{user_id}/upload"),
        ("GET", "/datasets/{user_id}/list"),
        ("GET", "/datasets/{dataset_id}"),
        ("DELETE", "/datasets/{dataset_id}"),
        ("GET", "/billing/usage"),
        ("GET", "/billing/history"),
        ("GET", "/billing/pricing"),
        ("GET", "/billing/job/{job_id}/cost"),
        ("GET", "/billing/report"),
        ("PUT", "/billing/budget"),
        ("POST", "/keys"),
        ("GET", "/keys"),
        ("DELETE", "/keys/{key_id}"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/{file_id}"),
        ("DELETE", "/v1/files/{file_id}"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"),
    }


def test_without_a_token_every_private_route_is_401(api: Api, world: dict[str, str]) -> None:
    for method, template in operations(api):
        if (method, template) in PUBLIC:
            continue
        reply = call(api, method, template, world, {})
        assert reply.status_code == 401, (method, template, reply.text)
        assert method == "HEAD" or reply.json()["error"]["code"] == "unauthenticated"  # HEAD: no body


def test_another_users_ids_answer_404_like_unknown_ones(
    api: Api, ann: User, bob: User, world: dict[str, str]
) -> None:
    before = sorted(api.rt.bucket.list(f"users/{ann.user_id}/"))
    unknown = {key: f"{key.split('_')[0]}_unknown" for key in world}
    for method, template in operations(api):
        if (method, template) in PUBLIC or "{" not in template:
            continue
        theirs = call(api, method, template, world, bob.headers)
        nobodys = call(api, method, template, unknown, bob.headers)
        assert theirs.status_code == 404, (method, template, theirs.text)
        assert nobodys.status_code == 404, (method, template, nobodys.text)
        if method == "HEAD":  # no body to compare
            continue
        mine, unknowns = theirs.json()["error"], nobodys.json()["error"]
        assert mine["code"] == unknowns["code"] and mine["code"] in ("not_found", "model_not_found")
        place = "param" if template.startswith("/v1/") else "where"  # /v1: OpenAI's error shape
        assert mine[place] == unknowns[place]
    assert sorted(api.rt.bucket.list(f"users/{ann.user_id}/")) == before
    job = api.client.get(f"/fine-tune/{world['job_id']}/status", headers=ann.headers).json()
    assert job["status"] == "succeeded"


def used_this_month_and_last(api: Api, user: User) -> str:
    """A running job of ``user`` with GPU time metered this month and last month, and a budget."""
    job_id = api.job(user)
    app, now = api.rt.user_app(user.user_id), api.rt.clock()
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    last_month = period_of(now.replace(day=1) - timedelta(days=1))
    for seq, period in ((1, last_month), (2, period_of(now))):
        meter(app, job_id, 1, seq, seq, "a100-80gb", 1, 60_000, 2_100_000, period, now)
    budget = {"monthly_limit_usd_micros": ANNS_BUDGET}
    reply = api.client.put("/billing/budget", json=budget, headers=user.headers)
    assert reply.status_code == 200, reply.text
    api.settle(user)
    return job_id


def test_routes_without_ids_show_only_the_callers_own(
    api: Api, ann: User, bob: User, world: dict[str, str]
) -> None:
    """Ann has usage in the month every route without an id shows (and last month's in the
    history): each shows it to her, and none of it to Bob."""
    ann_ids = {**world, "used_job_id": used_this_month_and_last(api, ann)}
    routes = [
        (method, template)
        for method, template in operations(api)
        if (method, template) not in PUBLIC and "{" not in template and method == "GET"
    ]
    shows = {"/keys": "key_id", "/v1/models": "model_id", "/v1/files": "dataset_id"}  # if not her jobs
    for method, template in routes:
        if template not in ("/billing/pricing", "/hardware"):  # the same for everyone
            own = call(api, method, template, ann_ids, ann.headers)
            mine = ann_ids[shows.get(template, "used_job_id")]
            assert own.status_code == 200 and mine in own.text, (method, template, own.text)
    usage = call(api, "GET", "/billing/usage", ann_ids, ann.headers).text
    assert str(ANNS_BUDGET) in usage
    for method, template in operations(api):
        if (method, template) in PUBLIC or "{" in template:
            continue
        reply = call(api, method, template, ann_ids, bob.headers)
        expected = {  # Ann's model and file: not Bob's; a file upload needs a form
            ("POST", "/keys"): 201,
            ("POST", "/v1/chat/completions"): 404,
            ("POST", "/v1/fine_tuning/jobs"): 404,
            ("POST", "/v1/files"): 415,
        }
        assert reply.status_code == expected.get((method, template), 200), (method, template, reply.text)
        if (method, template) in (("POST", "/v1/chat/completions"), ("POST", "/v1/fine_tuning/jobs")):
            continue  # its 404 echoes the name Bob sent, as for any unknown model (tests/api/test_openai.py)
        assert not any(value in reply.text for value in ann_ids.values()), (method, template, reply.text)
        assert str(ANNS_BUDGET) not in reply.text, (method, template, "Ann's budget")


def test_an_admin_may_read_but_not_write_another_users_listings(
    api: Api, ann: User, world: dict[str, str]
) -> None:
    admin = api.user("root", role="admin")
    for kind in ("fine-tune", "models", "datasets"):
        assert api.client.get(f"/{kind}/{ann.user_id}/list", headers=admin.headers).status_code == 200
    jobs = api.client.get(f"/fine-tune/{ann.user_id}/list", headers=admin.headers).json()["jobs"]
    assert world["job_id"] in [j["job_id"] for j in jobs]
    reply = api.client.post(
        f"/fine-tune/{ann.user_id}/start",
        json={"base_model": "tiny-llama", "dataset_id": world["dataset_id"]},
        headers=admin.headers,
    )
    assert reply.status_code == 404
