"""``/keys``: the caller's API keys, for programs (bearer tokens like a login's, that do not expire)."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.deps import PathId
from api.errors import documented
from api.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyList
from api.services.keys import KeyService


class KeyController(Controller):
    path = "/keys"
    tags = ["keys"]

    @post(
        operation_id="create_key",
        responses=documented(403, meanings={403: "too many active keys: revoke one first"}),
        sync_to_thread=True,
    )
    def create_key(self, data: JSONBody[ApiKeyCreate], keys: NamedDependency[KeyService]) -> ApiKeyCreated:
        """A new API key: ``key`` is shown in this reply only; send it as ``Authorization: Bearer <key>``."""
        return keys.create(data.name)

    @get(operation_id="list_keys", responses=documented(), sync_to_thread=True)
    def list_keys(self, keys: NamedDependency[KeyService]) -> ApiKeyList:
        """Your keys, active and revoked (never their secrets)."""
        return keys.list()

    @delete(
        "/{key_id:str}",
        operation_id="revoke_key",
        status_code=200,
        responses=documented(404, 409),
        sync_to_thread=True,
    )
    def revoke_key(self, key_id: PathId, keys: NamedDependency[KeyService]) -> ApiKey:
        """Revoke a key: it is refused from the next request on (409 if it already is)."""
        return keys.revoke(key_id)
