"""Paging through a list route: one page (``--limit``, ``--after``) or every one (``--all``).

The list routes answer a page newest first with ``has_more`` and ``next`` (the cursor to pass as
``after``); ``--all`` follows ``next`` a hundred rows at a time until there are no more.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

from cyclopts import Parameter

__all__ = ["AfterFlag", "AllFlag", "LimitFlag", "fetch_rows", "show_rows"]

PAGE = 100
"""Rows per request with ``--all`` (the API's largest page)."""

LimitFlag = Annotated[int, Parameter(help="Show at most this many, newest first (1-100).")]
AllFlag = Annotated[bool, Parameter(name="--all", help="Show every one, newest first (pages through).")]
AfterFlag = Annotated[str | None, Parameter(help="Start after this cursor (a previous page's `next`).")]


def fetch_rows(
    client: Any,
    path: str,
    reply_type: type,
    field: str,
    *,
    limit: int,
    every: bool,
    after: str | None = None,
    params: dict[str, str] | None = None,
    noun: str = "rows",
) -> list[Any]:
    """The rows of one page of ``path`` (``every``: of all its pages); a hint on stderr when more
    are left on the server."""
    rows: list[Any] = []
    cursor = after
    while True:
        query = {**(params or {}), "limit": str(PAGE if every else limit)}
        if cursor is not None:
            query["after"] = cursor
        reply = client.get(path, params=query, type=reply_type)
        rows.extend(getattr(reply, field))
        cursor = reply.next if reply.has_more else None
        if cursor is None:
            return rows
        if not every:
            print(f"more {noun}: --all for every one, or --after {cursor}", file=sys.stderr)
            return rows


def show_rows(
    client: Any,
    path: str,
    reply_type: type,
    field: str,
    columns: Sequence[str],
    *,
    limit: int,
    every: bool,
    after: str | None,
    json: bool,
    params: dict[str, str] | None = None,
) -> None:
    """A list command's output: the rows of ``path`` (``fetch_rows``, ``field`` naming them) as JSON with
    ``json``, else as a table of ``columns``."""
    from cli.output import Column, print_json, print_table

    rows = fetch_rows(client, path, reply_type, field, limit=limit, every=every, after=after, params=params,
                      noun=field)
    if json:
        print_json(rows)
    else:
        print_table(rows, [Column(k) for k in columns], empty=f"no {field}")
