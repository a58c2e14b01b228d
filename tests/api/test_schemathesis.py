"""``schemathesis run --checks all`` against /schema/openapi.json, in-process, with a valid token: 0 failures.

The engine the CLI drives runs here on the app under test (ASGI): every check
(no 5xx, status codes, headers and bodies as documented, valid requests accepted
and invalid ones refused, Allow on OPTIONS and 405, unsupported methods, auth
enforced where the document asks for it, use after delete...) over every phase
(examples, coverage, fuzzing, stateful), with the repository's
``schemathesis.toml``, as ``schemathesis run --checks all`` reads it from the
repository root. Every refusal must also carry the one error shape.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from tests.api.conftest import Api, User

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 20

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def without_lifespan(app: Asgi) -> Asgi:
    """``app`` for the engine: the test client already runs its lifespan (startup once, shutdown once)."""

    async def served(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("the lifespan is the test client's")  # the engine then skips it
        await app(scope, receive, send)

    return served


def run_all_checks(api: Api, user: User) -> Iterator[events.EngineEvent]:
    config = SchemathesisConfig.from_path(ROOT / "schemathesis.toml")
    config.update(seed=17, max_failures=None)
    config.cache.enabled = False  # no .schemathesis/ left in the checkout
    project = config.projects.override
    project.update(headers=user.headers, parameters={"user_id": user.user_id})
    project.checks.update(included_check_names=["all"])
    project.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", without_lifespan(api.client.app), config=config
    )
    return from_schema(schema).execute()


OPENAI_ERROR = {"message", "type", "param", "code"}  # the shape of every refusal on /v1 (api.errors)


def refusal_shape_problem(status: int, content: bytes | None, path: str = "/") -> str | None:
    if status < 400 or not content:
        return None if status < 400 else "an empty error body"
    try:
        error = json.loads(content)["error"]
    except (ValueError, KeyError, TypeError):
        return f"not the error shape: {content[:120]!r}"
    fields = OPENAI_ERROR if path.startswith("/v1/") else {"code", "message", "where"}
    if set(error) != fields or not error["message"]:
        return f"not the error shape: {error}"
    return None


def test_schemathesis_all_checks_find_nothing(api: Api, ann: User, world: dict[str, str]) -> None:
    failures: list[str] = []
    cases = 0
    for event in run_all_checks(api, ann):
        if isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(
                f"engine error: {getattr(event, 'value', getattr(event, 'exception', None))!r:.300}"
            )
        if not isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            continue
        recorder = event.recorder
        cases += len(recorder.cases)
        for nodes in recorder.checks.values():
            for node in nodes:
                if node.failure_info is not None:
                    failure = node.failure_info.failure
                    failures.append(
                        f"{failure.code} {failure.operation}: {failure.title}\n  {failure.message}"[:600]
                    )
                    failures.append(f"  {node.failure_info.code_sample}"[:600])
        for case_id, interaction in recorder.interactions.items():
            response = interaction.response
            if response is not None and interaction.request.method != "HEAD":
                path = recorder.cases[case_id].value.operation.path
                problem = refusal_shape_problem(response.status_code, response.content, path)
                if problem:
                    failures.append(f"{recorder.cases[case_id].value.operation.label}: {problem}")
    assert cases >= 300, f"only {cases} cases ran"
    assert not failures, "\n".join(dict.fromkeys(failures))
