"""The paged index of a listing, kept per changed item, and the query that reads it a page at a time.

``ListingIndex`` is the write side (one per family in a user partition): a changed row touches
its page and the head, never the other pages, so the cost of a state change does not grow with
the history. ``select`` is the read side, pure over a head and a way to read a page: the rows
matching a ``Query``, newest first, after a cursor key, reading only the pages whose summary can
hold one (pages are visited newest first and the walk stops once no page left can beat what it
has). The shapes are ``views.index``; the names ``storage.layout.index_head`` / ``index_page``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from uuid import UUID

import msgspec

from views.index import IndexHead, IndexPage, PageSummary, sort_key

__all__ = ["PAGE_ROWS", "ListingIndex", "Query", "Selection", "every_row", "select", "summarise"]

PAGE_ROWS = 200
"""Entities per page: a page of job rows is ~45 KB; 10,000 jobs make a head of 50 summaries."""


def _key(row: Any, id_field: str) -> str:
    return sort_key(row.created_at, getattr(row, id_field))


def summarise(page: int, rows: Iterable[Any], id_field: str) -> PageSummary:
    """The head's summary of ``page`` holding ``rows`` (oldest first)."""
    states: dict[str, int] = {}
    base_models: dict[str, int] = {}
    count, first, last = 0, None, None
    for row in rows:
        key = _key(row, id_field)
        first = key if first is None else first
        last = key
        count += 1
        states[row.status] = states.get(row.status, 0) + 1
        base_model = getattr(row, "base_model", None)
        if base_model:
            base_models[base_model] = base_models.get(base_model, 0) + 1
    return PageSummary(page=page, count=count, first=first, last=last, states=states, base_models=base_models)


class ListingIndex:
    """One listing's index in a partition, as entities change.

    Args:
        touch: ``Views.touch`` of the partition (name, render) for an index object.
        head: the head's name; ``page_name(n)``: page ``n``'s.
        row: an entity's listing row, or None while it is not listed.
        id_field: the rows' id (``job_id`` ...), the second part of the order.
        page_rows: entities per page (default ``PAGE_ROWS``, read when the index is made).
    """

    def __init__(
        self,
        touch: Callable[[str, Callable[[int], Any]], None],
        head: str,
        page_name: Callable[[int], str],
        row: Callable[[Any], Any],
        id_field: str,
        page_rows: int | None = None,
    ) -> None:
        self._touch = touch
        self.head = head
        self._page_name = page_name
        self._row = row
        self._id_field = id_field
        self.page_rows = page_rows or PAGE_ROWS
        self._page_of: dict[UUID, int] = {}
        self._members: list[list[UUID]] = []
        self._rows: dict[UUID, Any] = {}
        self._summaries: list[PageSummary] = []
        self._stale: set[int] = set()

    def update(self, key: UUID, state: Any) -> None:
        """Entity ``key`` is now ``state`` (and its listing row changed): touch its page and the head."""
        page = self._page_of.get(key)
        if page is None:
            page = self._page_of[key] = len(self._page_of) // self.page_rows
            if page == len(self._members):
                self._members.append([])
                self._summaries.append(PageSummary(page=page))
            self._members[page].append(key)
        self._rows[key] = self._row(state)
        self._stale.add(page)
        self._touch(self._page_name(page), lambda position: self.page_view(page, position))
        self._touch(self.head, self.head_view)

    def rows(self, page: int) -> list[Any]:
        """The listed rows of ``page``, oldest first."""
        listed = (self._rows[key] for key in self._members[page])
        return sorted((r for r in listed if r is not None), key=lambda r: _key(r, self._id_field))

    def page_view(self, page: int, position: int) -> IndexPage[Any]:
        return IndexPage(position, page, self.rows(page))

    def head_view(self, position: int) -> IndexHead:
        for page in sorted(self._stale):
            self._summaries[page] = summarise(page, self.rows(page), self._id_field)
        self._stale.clear()
        return IndexHead(
            position, sum(s.count for s in self._summaries), self.page_rows, list(self._summaries)
        )


# -- reading ------------------------------------------------------------------------------------


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What a list call asks for: rows older than ``after`` (a sort key; None: from the newest),
    at most ``limit``, in ``state`` / on ``base_model``, created in ``[created_from, created_to)``
    (sort keys of times: ``sort_key(iso, "")``)."""

    limit: int
    after: str | None = None
    state: str | None = None
    base_model: str | None = None
    created_from: str | None = None
    created_to: str | None = None

    def could_hold(self, page: PageSummary) -> bool:
        """Whether ``page`` can hold a matching row, by its summary alone."""
        if not page.count or page.first is None or page.last is None:
            return False
        if self.after is not None and page.first >= self.after:
            return False
        if self.state is not None and not page.states.get(self.state):
            return False
        if self.base_model is not None and not page.base_models.get(self.base_model):
            return False
        if self.created_from is not None and page.last < self.created_from:
            return False
        return not (self.created_to is not None and page.first >= self.created_to)

    def matches(self, key: str, row: Any) -> bool:
        return (
            (self.after is None or key < self.after)
            and (self.state is None or row.status == self.state)
            and (self.base_model is None or getattr(row, "base_model", None) == self.base_model)
            and (self.created_from is None or key >= self.created_from)
            and (self.created_to is None or key < self.created_to)
        )


class Selection(msgspec.Struct, frozen=True):
    """The rows of one page of a list call, newest first; ``has_more``: older ones match too;
    ``pages_read``: how many index pages it took (what a test of "reads only what it needs" checks)."""

    rows: list[Any]
    has_more: bool
    last_key: str | None
    pages_read: int


def select(head: IndexHead, read_page: Callable[[int], list[Any]], query: Query, id_field: str) -> Selection:
    """The rows matching ``query``, newest first, reading only the pages that can hold them.

    Pages are visited by their newest key, newest first; the walk stops once it holds ``limit + 1``
    rows and no page left has a key newer than the ``limit + 1``-th (pages of entities that arrived
    in creation order never overlap, so a page of 20 reads one or two pages).
    """
    pages = sorted((p for p in head.pages if query.could_hold(p)), key=lambda p: p.last or "", reverse=True)
    want = query.limit + 1
    best: list[tuple[str, int, Any]] = []  # a min-heap of the newest ``want`` matches: (key, tie, row)
    read = 0
    for summary in pages:
        if len(best) >= want and (summary.last or "") < best[0][0]:
            break
        read += 1
        for row in read_page(summary.page):
            key = _key(row, id_field)
            if not query.matches(key, row):
                continue
            item = (key, read, row)
            if len(best) < want:
                heapq.heappush(best, item)
            elif key > best[0][0]:
                heapq.heapreplace(best, item)
    ordered = sorted(best, key=lambda item: item[0], reverse=True)
    rows = ordered[: query.limit]
    return Selection(
        [row for _, _, row in rows], len(ordered) > query.limit, rows[-1][0] if rows else None, read
    )


def every_row(
    head: IndexHead, read_page: Callable[[int], list[Any]], query: Query, id_field: str
) -> Iterator[Any]:
    """Every row matching ``query`` (its ``limit`` and ``after`` aside), oldest first: the reply to a
    client that does not page, as the complete listing ordered it."""
    unpaged = msgspec.structs.replace(query, after=None)
    pages = sorted((p for p in head.pages if unpaged.could_hold(p)), key=lambda p: p.first or "")
    found = [
        (key, row)
        for summary in pages
        for row in read_page(summary.page)
        if unpaged.matches(key := _key(row, id_field), row)
    ]
    found.sort(key=lambda item: item[0])
    return (row for _, row in found)
