"""schemathesis against /schema/openapi.json with a valid token: no input makes the server fail (5xx).

Both valid (positive) and invalid (negative) requests are generated for every
operation; a refused one must carry the one error shape, a 2xx body must match
its schema.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.api.conftest import Api, User

EXAMPLES = 20
CHECKS = [checks.not_a_server_error, checks.response_schema_conformance]


def first_failure(
    operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str], ids: dict[str, str]
) -> str | None:
    """Run generated requests against one operation; describe the first failure, if any.

    The caller's own user id always replaces a generated one (any other answers 404 at once);
    the other path ids are the caller's real ones half of the time, so requests reach the handlers.
    """

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case: schemathesis.Case, real: bool) -> None:
        for name in case.path_parameters or {}:
            if name == "user_id" or (real and name in ids):
                case.path_parameters[name] = ids[name]
        response = case.call(headers={**(case.headers or {}), **headers})
        case.validate_response(
            response, checks=[checks.not_a_server_error, checks.response_schema_conformance]
        )
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"code", "message", "where"} and error["message"], error

    try:
        run()
    except Exception as exc:
        return f"{operation.label}: {exc}"[:800]
    return None


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_server_errors(api: Api, ann: User, world: dict[str, str], mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", api.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = [f for op in operations if (f := first_failure(op, mode, ann.headers, world))]
    assert not failures, "\n".join(failures)
