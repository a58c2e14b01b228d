"""Pages of a user's listing (jobs, datasets, models), read from its index; opaque cursors.

A list call with ``limit`` or ``after`` gets a page, newest first: rows ordered by
(``created_at``, id) descending, a stable order (ids break ties), read from the listing's paged
index (``projections.index.select``: only the pages whose summary can hold a match). Without
either, the reply is every matching row oldest first, as the complete listing has always been
served to clients that do not page. The filters (``state``, ``base_model``, ``created_from``
inclusive, ``created_to`` exclusive) choose the pages before any is read.

A cursor (``next``, passed back as ``after``) is the sort key of the last row sent, with the
listing's name, as unpadded URL-safe base64 of a JSON array: opaque to clients, and no capability.
It positions a walk in the listing of the user named in the path, whose access the guards have
already checked; a cursor from another user's listing only positions a walk in this one, and a
cursor of another listing, or no cursor at all, is a 400 naming ``after``.

Until a partition's projector has written its index (a bucket written by a release before it,
served before anything touched the partition), the complete listing is read instead, as one page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from domain.errors import ValidationFailed
from projections.index import Query, Selection, every_row, select, summarise
from projections.render import iso
from runtime.context import Runtime
from storage import ObjectNotFound, layout
from views.index import IndexHead, IndexPage, sort_key

__all__ = [
    "DEFAULT_LIMIT",
    "EVERY",
    "MAX_LIMIT",
    "Listing",
    "PageRequest",
    "Pages",
    "decode_cursor",
    "encode_cursor",
]

DEFAULT_LIMIT = 20
"""Rows in a page when ``after`` is given without ``limit``."""
MAX_LIMIT = 100

_CURSOR_VERSION = 1


class PageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The paging and time filters of a list call, as the client sent them."""

    limit: int | None = None
    after: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    @property
    def paged(self) -> bool:
        return self.limit is not None or self.after is not None


EVERY = PageRequest()
"""No paging: every row, oldest first."""


class Listing(NamedTuple):
    """One indexed listing: its name in ``storage.layout.INDEXED``, the rows' type and id field,
    the complete listing's name function and its reply type (the field holding its rows)."""

    name: str
    row: type
    id_field: str
    complete: Callable[[str], str]
    reply: type
    rows_field: str


def encode_cursor(listing: str, key: str) -> str:
    raw = msgspec.json.encode([_CURSOR_VERSION, listing, key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(listing: str, cursor: str) -> str:
    """The sort key in ``cursor``; ValidationFailed (``after``) unless it is a cursor of ``listing``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, of, key = msgspec.json.decode(raw, type=tuple[int, str, str])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValidationFailed(
            "not a cursor: pass the `next` of the previous page as `after`", where="after"
        ) from None
    if version != _CURSOR_VERSION or of != listing:
        raise ValidationFailed(f"not a cursor of the {listing} list", where="after")
    return key


def _time_key(at: datetime | None) -> str | None:
    if at is None:
        return None
    return sort_key(iso(at if at.tzinfo is not None else at.replace(tzinfo=UTC)), "")


class Pages:
    """The pages of one user's ``listing``."""

    def __init__(self, runtime: Runtime, user_id: str, listing: Listing) -> None:
        self.rt = runtime
        self.user_id = user_id
        self.listing = listing
        self._page_type: Any = IndexPage[listing.row]  # type: ignore[name-defined]

    def query(
        self, request: PageRequest, *, state: str | None = None, base_model: str | None = None
    ) -> Query:
        """The index query of ``request``; ValidationFailed naming the bad parameter."""
        limit = request.limit if request.limit is not None else DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be 1 to {MAX_LIMIT}, not {limit}", where="limit")
        after = decode_cursor(self.listing.name, request.after) if request.after is not None else None
        created_from, created_to = _time_key(request.created_from), _time_key(request.created_to)
        if created_from is not None and created_to is not None and created_to <= created_from:
            raise ValidationFailed("created_to must be later than created_from", where="created_to")
        return Query(
            limit=limit,
            after=after,
            state=state,
            base_model=base_model,
            created_from=created_from,
            created_to=created_to,
        )

    def reply(self, request: PageRequest, *, state: str | None = None, base_model: str | None = None) -> Any:
        """The list call's reply (``listing.reply``): a page, or every row for a client that does not page."""
        query = self.query(request, state=state, base_model=base_model)
        head, read_page = self._source()
        rows_field = self.listing.rows_field
        if not request.paged:
            rows = list(every_row(head, read_page, query, self.listing.id_field))
            return self.listing.reply(**{rows_field: rows}, position=head.position)
        found = self.select(query, head, read_page)
        last = found.last_key
        cursor = encode_cursor(self.listing.name, last) if found.has_more and last is not None else None
        return self.listing.reply(
            **{rows_field: found.rows}, position=head.position, has_more=found.has_more, next=cursor
        )

    def every(self, query: Query) -> list[Any]:
        """Every row matching ``query`` (its limit and cursor aside), oldest first."""
        head, read_page = self._source()
        return list(every_row(head, read_page, query, self.listing.id_field))

    def select(
        self, query: Query, head: IndexHead | None = None, read_page: Callable[[int], list[Any]] | None = None
    ) -> Selection:
        if head is None or read_page is None:
            head, read_page = self._source()
        return select(head, read_page, query, self.listing.id_field)

    def _source(self) -> tuple[IndexHead, Callable[[int], list[Any]]]:
        """The index's head and its page reader; the complete listing as one page until there is one."""
        name = self.listing.name
        try:
            head, _ = self.rt.views.read_as(layout.index_head(self.user_id, name), IndexHead)
        except ObjectNotFound:
            return self._complete()

        def read_page(page: int) -> list[Any]:
            try:
                found, _ = self.rt.views.read_as(layout.index_page(self.user_id, name, page), self._page_type)
            except ObjectNotFound:  # a head written by another process before its page reached us
                return []
            return found.rows  # type: ignore[no-any-return]

        return head, read_page

    def _complete(self) -> tuple[IndexHead, Callable[[int], list[Any]]]:
        empty = self.listing.reply()
        complete = self.rt.view_or(self.listing.complete(self.user_id), self.listing.reply, empty)
        id_field = self.listing.id_field
        rows = sorted(
            (r for r in getattr(complete, self.listing.rows_field) if r.status != "deleted"),
            key=lambda r: sort_key(r.created_at, getattr(r, id_field)),
        )
        summary = summarise(0, rows, id_field)
        return IndexHead(complete.position, len(rows), len(rows), [summary]), lambda page: rows
