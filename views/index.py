"""The paged index of a listing (``storage.layout.index_head`` / ``index_page``): its stored shapes.

A listing (jobs, datasets, models) is kept twice: complete (``jobs.json`` ..., the documented
layout, rewritten at most once per interval) and as this index, updated per changed item, which
the API pages through. Entities fall into pages by order of arrival (an entity keeps its page:
the ``n``-th entity of the partition is in page ``n // page_rows``); a page holds the rows of its
entities that are listed (a deleted model or dataset is not), oldest first. The head summarises
every page so that a query reads only the pages that can hold an answer.

Rows are ordered by ``sort_key``: ``created_at`` at a fixed width (microseconds always written,
so that strings compare as times), a space, then the id. Pages hold ``views.rows`` rows as they
are, so a page decodes into ``IndexPage[JobRow]`` and so on.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

__all__ = ["IndexHead", "IndexPage", "PageSummary", "sort_key"]

R = TypeVar("R")


def sort_key(created_at: str | None, object_id: str) -> str:
    """``2024-03-14T10:30:00.000000Z j1``: the order of a listing (created_at, then id) as one string.

    ``projections.render.iso`` writes microseconds only where there are some; they are filled in
    here, so the keys of two rows compare as their times do.
    """
    at = created_at or ""
    if len(at) == 20 and at.endswith("Z"):  # 2024-03-14T10:30:00Z
        at = f"{at[:-1]}.000000Z"
    return f"{at} {object_id}"


class PageSummary(msgspec.Struct, kw_only=True):
    """One page in the head: how many listed rows it holds, its oldest and newest sort key, and how
    many of its rows are in each state and on each base model (a page without one is not read)."""

    page: int
    count: int = 0
    first: str | None = None
    last: str | None = None
    states: dict[str, int] = msgspec.field(default_factory=dict)
    base_models: dict[str, int] = msgspec.field(default_factory=dict)


class IndexHead(msgspec.Struct):
    """``index/<listing>/head.json``: the listed rows in all (``count``) and every page's summary."""

    position: int
    count: int
    page_rows: int
    pages: list[PageSummary]


class IndexPage(msgspec.Struct, Generic[R]):
    """``index/<listing>/<page>.json``: the listed rows of the page's entities, oldest first."""

    position: int
    page: int
    rows: list[R]
