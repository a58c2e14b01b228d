"""Preference (DPO) datasets and jobs at the API: the format is recorded, the objective must fit it."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import Api, User


def preference_lines(n: int = 12) -> bytes:
    """``n`` valid preference pairs as JSONL (OpenAI's DPO format)."""
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good answer {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad answer {i}"}],
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def pairs(api: Api, ann: User) -> str:
    uploaded = api.upload(ann, preference_lines(), filename="pairs.jsonl")
    assert uploaded["status"] == "validated" and uploaded["format"] == "preference", uploaded
    assert uploaded["rows"] == 12 and uploaded["stats"]["role_counts"] == {"assistant": 24, "user": 12}
    return uploaded["dataset_id"]  # type: ignore[no-any-return]


def test_a_dpo_job_on_a_preference_dataset_is_submitted_with_its_beta(
    api: Api, ann: User, pairs: str
) -> None:
    reply = api.start(ann, pairs, config={"epochs": 1, "objective": "dpo", "dpo_beta": 0.3})

    assert reply.status_code == 201, reply.text
    assert reply.json()["config"]["objective"] == "dpo" and reply.json()["config"]["dpo_beta"] == 0.3


def test_sft_on_a_preference_dataset_is_422_naming_both(api: Api, ann: User, pairs: str) -> None:
    reply = api.start(ann, pairs)  # objective defaults to sft

    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "dataset_mismatch" and error["where"] == "dataset_id"
    assert error["message"] == (
        f"objective sft trains on a chat / prompt_completion / text dataset, but dataset {pairs} is "
        "preference; train it with objective dpo (config key 'objective')"
    )


def test_dpo_on_a_chat_dataset_is_422_naming_both(api: Api, ann: User) -> None:
    chat = api.upload(ann)["dataset_id"]

    reply = api.start(ann, chat, config={"objective": "dpo"}, dry_run=True)

    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["message"] == (
        f"objective dpo trains on a preference dataset, but dataset {chat} is chat; "
        "train it with objective sft (config key 'objective')"
    )


def test_a_bad_objective_or_beta_is_400_with_the_other_config_problems(
    api: Api, ann: User, pairs: str
) -> None:
    reply = api.start(ann, pairs, config={"objective": "ppo", "dpo_beta": 0})

    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["where"] == "objective, dpo_beta"
    assert "must be one of sft, dpo (got 'ppo'" in error["message"]
