"""API keys: created (shown once), listed, revoked; accepted as a bearer token across the API."""

from __future__ import annotations

from tests.api.conftest import Api, User


def _create(api: Api, user: User, name: str = "ci") -> dict:
    reply = api.client.post("/keys", json={"name": name}, headers=user.headers)
    assert reply.status_code == 201, reply.text
    return reply.json()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_shown_once_and_works_as_a_bearer_token(api: Api, ann: User) -> None:
    created = _create(api, ann)
    key = created["key"]
    assert key.startswith("tsk.") and created["status"] == "active"
    listed = api.client.get("/keys", headers=ann.headers).json()["keys"]
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert all("key" not in k and key not in str(k) for k in listed)
    assert api.client.get(f"/models/{ann.user_id}/list", headers=_bearer(key)).status_code == 200
    assert api.client.get("/v1/models", headers=_bearer(key)).status_code == 200
    # the key acts as its user only
    assert api.client.get("/keys", headers=_bearer(key)).json()["keys"][0]["key_id"] == created["key_id"]


def test_only_the_hash_is_stored(api: Api, ann: User) -> None:
    created = _create(api, ann)
    secret = created["key"].rsplit(".", 1)[1]
    for name in api.rt.bucket.list(""):
        with api.rt.bucket.open_read(name) as fh:
            assert secret.encode() not in fh.read(), name


def test_a_revoked_key_stops_working_at_once(api: Api, ann: User) -> None:
    created = _create(api, ann)
    headers = _bearer(created["key"])
    assert api.client.get("/keys", headers=headers).status_code == 200
    revoked = api.client.delete(f"/keys/{created['key_id']}", headers=ann.headers)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    refused = api.client.get("/keys", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert api.client.delete(f"/keys/{created['key_id']}", headers=ann.headers).status_code == 409


def test_a_forged_or_foreign_key_is_refused(api: Api, ann: User, bob: User) -> None:
    created = _create(api, ann)
    _, user_id, key_id, secret = created["key"].split(".")
    forged = f"tsk.{user_id}.{key_id}.{secret[:-2]}xx"
    assert api.client.get("/keys", headers=_bearer(forged)).status_code == 401
    as_bob = f"tsk.{bob.user_id}.{key_id}.{secret}"  # ann's secret, bob's name on it
    assert api.client.get("/keys", headers=_bearer(as_bob)).status_code == 401
    assert api.client.get("/keys", headers=_bearer("tsk.nonsense")).status_code == 401
    assert api.client.delete(f"/keys/{key_id}", headers=bob.headers).status_code == 404


def test_a_suspended_users_keys_are_refused(api: Api, ann: User) -> None:
    created = _create(api, ann)
    api.rt.platform.suspend_user(ann.user_id, "unpaid bills", api.rt.clock())
    api.rt.committed("platform")
    assert api.client.get("/keys", headers=_bearer(created["key"])).status_code == 401


def test_a_key_needs_a_name(api: Api, ann: User) -> None:
    assert api.client.post("/keys", json={"name": "  "}, headers=ann.headers).status_code == 400
    assert api.client.post("/keys", json={}, headers=ann.headers).status_code == 400
