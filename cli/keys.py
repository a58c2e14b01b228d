"""``tune key``: API keys for programs (``create`` shows the key once; ``list``; ``revoke``).

A key is a bearer token like a login's that does not expire: ``Authorization: Bearer <key>``
on the API, or ``OpenAI(base_url=<server>/v1, api_key=<key>)``.
"""

from __future__ import annotations

import sys
from typing import Annotated

from cyclopts import App, Parameter

from cli.context import Ctx, JsonFlag

__all__ = ["key_app"]

key_app = App(
    name="key", help="API keys for programs: create, list, revoke.", default_parameter=Parameter(negative=())
)

_COLUMNS = ("key_id", "name", "status", "created_at", "revoked_at")


@key_app.command
def create(
    *,
    name: Annotated[str, Parameter(help="What the key is for (ci, laptop).")],
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """Create a key and print it: it is shown this once (the server keeps only its hash)."""
    from api.schemas import ApiKeyCreate, ApiKeyCreated
    from cli.output import print_json

    reply = ctx.client.post("/keys", ApiKeyCreate(name=name), type=ApiKeyCreated)
    if json:
        print_json(reply)
        return
    print(reply.key)
    print(f"key {reply.key_id} ({reply.name}): copy it now, it is not shown again", file=sys.stderr)


@key_app.command(name="list")
def list_keys(*, json: JsonFlag = False, ctx: Ctx) -> None:
    """List your keys, active and revoked (never their secrets)."""
    from api.schemas import ApiKeyList
    from cli.output import Column, print_json, print_table

    rows = ctx.client.get("/keys", type=ApiKeyList).keys
    print_json(rows) if json else print_table(rows, [Column(k) for k in _COLUMNS], empty="no keys")


@key_app.command
def revoke(*, key_id: str, ctx: Ctx) -> None:
    """Revoke a key: the server refuses it from the next request on."""
    from api.schemas import ApiKey

    reply = ctx.client.delete(f"/keys/{key_id}", type=ApiKey)
    print(f"revoked {reply.key_id} ({reply.name})")
