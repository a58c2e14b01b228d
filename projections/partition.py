"""One partition's views, held in memory and advanced one notification at a time.

A partition is ``platform`` or ``users/<user_id>``; its name is also the prefix
of its events and of its views (``storage.layout`` names every one).
``apply(position, event)`` routes the event by type to the projections that fold
it, and records, for each view whose content changed, the position of that event.
A view's ``position`` is therefore the notification id of the last event that
changed it: a pure function of the log, so views rebuilt from position 0 have the
same bytes as views kept up event by event. ``metadata/position.json`` records the
partition's head (the position every view of the partition reflects) and is
written after the others.

A view is of one of three kinds (``Views.kind_of``): ``VIEW``, ``LISTING`` (the complete
``jobs.json``, ``datasets.json``, ``models.json``: audited like any view, but a projector may
coalesce their writes, so each trails the partition by at most its interval and carries its own
position) and ``INDEX`` (the paged index of those listings, ``projections.index``, which the API
serves: updated per changed item, written before position.json, and not one of ``names()``,
the views an audit compares: buckets written before the index existed have none, and the
projector writes a missing or older index on its first touch of the partition).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec

from projections import billing, catalogue, datasets, hardware, jobs, models, pricing, users
from projections.index import ListingIndex
from projections.render import encode, event_name
from storage import layout
from storage.layout import PLATFORM

__all__ = [
    "INDEX",
    "LISTING",
    "VIEW",
    "Anchor",
    "Partition",
    "PlatformPartition",
    "TrackingView",
    "UserPartition",
    "open_partition",
]

S = TypeVar("S")
_ABSENT = object()

VIEW, LISTING, INDEX = "view", "listing", "index"
"""The kinds of view (see the module docstring)."""


class TrackingView(msgspec.Struct, omit_defaults=True):
    """``<partition>/metadata/position.json``: every view of the partition reflects ``position``.

    ``commit`` / ``commit_sha256``: the log commit holding ``position`` and the SHA-256 of its bytes,
    as the views were made: the anchor an audit checks the log against (a hash chain cannot show an
    edited last commit or a truncated tail; this can). None where the log is not a bucket's.
    """

    position: int
    partition: str
    commit: int | None = None
    commit_sha256: str | None = None


Anchor = Callable[[int], "tuple[int, str] | None"]
"""The commit holding a notification id and its SHA-256 (``PartitionLog.commit_of``)."""


class Family(Protocol[S]):
    """A module that folds one kind of entity: a view per entity and a listing of them.

    Where the views lie is the partition's choice (``Entities``), from ``storage.layout``.
    """

    EVENTS: frozenset[str]

    def fold(self, state: S | None, event: Any) -> S: ...
    def item_view(self, state: S, position: int) -> Any: ...
    def listed(self, state: S) -> Any: ...
    def listing_view(self, states: list[S], position: int) -> Any: ...
    def row(self, state: S) -> Any: ...


class Views:
    """View names -> (position of the last change, how to render); the names changed since the last flush."""

    def __init__(self) -> None:
        self.position = 0
        self._at: dict[str, int] = {}
        self._render: dict[str, Callable[[int], Any]] = {}
        self._dirty: set[str] = set()
        self._kind: dict[str, str] = {}  # names of another kind than VIEW
        self._group: dict[str, str] = {}  # an index object -> its index's head
        self._rank: dict[str, int] = {}  # names written after the rank-0 ones of the same flush

    def touch(
        self,
        name: str,
        render: Callable[[int], Any],
        kind: str = VIEW,
        group: str | None = None,
        rank: int = 0,
    ) -> None:
        self._at[name] = self.position
        if rank:
            self._rank[name] = rank
        self._render[name] = render
        self._dirty.add(name)
        if kind != VIEW:
            self._kind[name] = kind
            if group is not None:
                self._group[name] = group

    def kind_of(self, name: str) -> str:
        return self._kind.get(name, VIEW)

    def write_order(self, names: Iterable[str]) -> list[str]:
        """``names`` in the order a flush writes them: by rank (a view that refers to others after
        them), then by name."""
        return sorted(names, key=lambda name: (self._rank.get(name, 0), name))

    def group_of(self, name: str) -> str | None:
        """The head of the index ``name`` belongs to (None for a view that is no index object)."""
        return self._group.get(name)

    def render(self, name: str) -> bytes:
        return encode(self._render[name](self._at[name]))

    def position_of(self, name: str) -> int:
        return self._at[name]

    def names(self) -> list[str]:
        """The views an audit compares and a rebuild writes (every kind but ``INDEX``)."""
        return [name for name in self._at if self._kind.get(name) != INDEX]

    def index_names(self) -> list[str]:
        return [name for name in self._at if self._kind.get(name) == INDEX]

    def mark_dirty(self, names: Iterable[str]) -> None:
        self._dirty.update(names)

    def take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        return dirty


class Entities(Generic[S]):
    """The entities of one family in a partition, keyed by aggregate id.

    ``listing``: the name of the family's listing view; ``item_name``: the name of an entity's view
    (asked once per entity: an entity keeps its name); ``index``: where the listing's paged index
    lies (``head``, ``page(n)``), None for a listing kept whole only; ``rank``: where its views come
    in a flush (``Views.write_order``).
    """

    def __init__(
        self,
        family: Family[S],
        views: Views,
        listing: str,
        item_name: Callable[[S], str],
        index: tuple[str, Callable[[int], str], str] | None = None,
        *,
        rank: int = 0,
    ) -> None:
        self.family = family
        self.rank = rank
        self.items: dict[UUID, S] = {}
        self._listed: dict[UUID, Any] = {}
        self._views = views
        self._listing = listing
        self._item_name = item_name
        self._names: dict[UUID, str] = {}
        self.index: ListingIndex | None = None
        if index is not None:
            head, page_name, id_field = index
            self.index = ListingIndex(
                lambda name, render: views.touch(name, render, INDEX, head, rank),
                head,
                page_name,
                family.row,
                id_field,
            )

    def apply(self, event: Any) -> S:
        key = event.originator_id
        state = self.family.fold(self.items.get(key), event)
        self.items[key] = state
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._item_name(state)
        self._views.touch(name, lambda pos: self.item_view(key, pos), rank=self.rank)
        listed = self.family.listed(state)
        if listed != self._listed.get(key, _ABSENT):
            self._listed[key] = listed
            kind = LISTING if self.index else VIEW
            self._views.touch(self._listing, self.listing_view, kind, rank=self.rank)
            if self.index is not None:
                self.index.update(key, state)
        return state

    def item_view(self, key: UUID, position: int) -> Any:
        return self.family.item_view(self.items[key], position)

    def listing_view(self, position: int) -> Any:
        return self.family.listing_view(list(self.items.values()), position)


class Partition:
    """Base of the two partition kinds: position, views, routing by event name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.views = Views()
        self.anchor: Anchor | None = None
        """Given by ``open_partition``: position.json then names the commit it was made from."""
        self._routes: dict[str, list[Callable[[Any], None]]] = {}

    _owned: re.Pattern[str]

    @property
    def position(self) -> int:
        return self.views.position

    def owns(self, name: str) -> bool:
        """Whether ``name`` is a view this partition writes (an audit's test for stray views)."""
        return self._owned.fullmatch(name) is not None

    def view_prefixes(self, *, deep: bool = False) -> list[str]:
        """Where to list its stored views (``deep``: every user folder, not only known users)."""
        return [f"{self.name}/"]

    def _route(self, names: Iterable[str], handler: Callable[[Any], Any]) -> None:
        for name in names:
            self._routes.setdefault(name, []).append(handler)

    def apply(self, position: int, event: Any) -> None:
        """Fold the event at notification ``position`` (which must follow the last one)."""
        if position <= self.views.position:
            raise ValueError(f"{self.name}: position {position} is not after {self.views.position}")
        self.views.position = position
        for handler in self._routes.get(event_name(event), ()):
            handler(event)
        self.views.touch(layout.position(self.name), self._tracking_view)

    def _tracking_view(self, position: int) -> TrackingView:
        commit = self.anchor(position) if self.anchor is not None else None
        return TrackingView(position, self.name, *(commit or (None, None)))


def _index(user_id: str, listing: str, id_field: str) -> tuple[str, Callable[[int], str], str]:
    return (
        layout.index_head(user_id, listing),
        lambda page: layout.index_page(user_id, listing, page),
        id_field,
    )


class UserPartition(Partition):
    """``users/<id>``: jobs, datasets, models and billing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.user_id = uid = layout.user_of(name)
        self._owned = layout.user_views(name)
        self.jobs: Entities[jobs.JobState] = Entities(
            jobs,  # type: ignore[arg-type]
            self.views,
            layout.jobs(uid),
            lambda job: layout.job_status(uid, job.job_id),
            _index(uid, "jobs", "job_id"),
            rank=1,  # a job's views name its model: written after the model's, which the API checks
        )
        self.datasets: Entities[datasets.DatasetState] = Entities(
            datasets,  # type: ignore[arg-type]
            self.views,
            layout.datasets(uid),
            lambda dataset: layout.dataset_metadata(uid, dataset.dataset_id),
            _index(uid, "datasets", "dataset_id"),
        )
        self.models: Entities[models.ModelState] = Entities(
            models,  # type: ignore[arg-type]
            self.views,
            layout.models(uid),
            lambda model: layout.model_metadata(uid, model.model_id),
            _index(uid, "models", "model_id"),
        )
        self.billing = billing.BillingState()
        self._route(jobs.EVENTS, self.jobs.apply)
        self._route(datasets.EVENTS, self.datasets.apply)
        self._route(models.EVENTS, self.models.apply)
        self._route(billing.EVENTS, self._apply_billing)

    def _apply_billing(self, event: Any) -> None:
        before = self.billing.current
        billing.fold(self.billing, event)
        changed = billing.touched(before, self.billing, event)
        if billing.BILLING in changed:
            self.views.touch(layout.billing(self.user_id), self._billing_view)
        if billing.HISTORY in changed:
            self.views.touch(layout.billing_history(self.user_id), self._history_view)

    def _billing_view(self, position: int) -> billing.BillingView:
        return billing.billing_view(self.billing, position)

    def _history_view(self, position: int) -> billing.HistoryView:
        return billing.history_view(self.billing, position)


class PlatformPartition(Partition):
    """``platform``: users, the price list (and each user's copy of it), the base-model catalogue, the
    hardware on offer."""

    _owned = layout.platform_views()

    def __init__(self, name: str = PLATFORM) -> None:
        super().__init__(name)
        self.users: Entities[users.UserState] = Entities(
            users,  # type: ignore[arg-type]
            self.views,
            layout.users(),
            lambda user: layout.user_info(user.user_id),
        )
        self.pricing = pricing.PricingState()
        self.catalogue: dict[str, catalogue.BaseModel] = {}
        self.hardware: hardware.HardwareState = {}
        self._route(users.EVENTS, self._apply_user)
        self._route(hardware.EVENTS, self._apply_hardware)
        self._route(pricing.EVENTS, self._apply_price)
        self._route(catalogue.EVENTS, self._apply_catalogue)

    def view_prefixes(self, *, deep: bool = False) -> list[str]:
        users_ = (
            [layout.USERS]
            if deep
            else [layout.metadata_prefix(layout.user_partition(u.user_id)) for u in self.users.items.values()]
        )
        return [layout.metadata_prefix(self.name), *sorted(users_)]

    def _pricing_view(self, position: int) -> pricing.PricingView:
        return pricing.view(self.pricing, position)

    def _apply_user(self, event: Any) -> None:
        user = self.users.apply(event)
        if event_name(event) == "User.Registered":
            self.views.touch(layout.user_pricing(user.user_id), self._pricing_view)

    def _apply_price(self, event: Any) -> None:
        self.pricing = pricing.fold(self.pricing, event)
        self.views.touch(layout.pricing(), self._pricing_view)
        for user in self.users.items.values():
            self.views.touch(layout.user_pricing(user.user_id), self._pricing_view)

    def _apply_catalogue(self, event: Any) -> None:
        self.catalogue = catalogue.fold(self.catalogue, event)
        self.views.touch(layout.base_models(), lambda pos: catalogue.view(self.catalogue, pos))

    def _apply_hardware(self, event: Any) -> None:
        self.hardware = hardware.fold(self.hardware, event)
        self.views.touch(layout.hardware(), lambda pos: hardware.view(self.hardware, pos))


def open_partition(partition: str, anchor: Anchor | None = None) -> Partition:
    """An empty in-memory partition of the right kind for ``platform`` or ``users/<id>``; with an
    ``anchor`` (``projections.replay.anchor_of(app)``) its position.json names its commit."""
    part: Partition
    if partition == PLATFORM:
        part = PlatformPartition()
    else:
        try:
            layout.user_of(partition)
        except ValueError:
            raise ValueError(f"not a partition name (platform or users/<id>): {partition!r}") from None
        part = UserPartition(partition)
    part.anchor = anchor
    return part
