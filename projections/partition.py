"""One partition's views, held in memory and advanced one notification at a time.

A partition is ``platform`` or ``users/<user_id>``; its name is also the prefix
of its events and of its views. ``apply(position, event)`` routes the event by
type to the projections that fold it, and records, for each view whose content
changed, the position of that event. A view's ``position`` is therefore the
notification id of the last event that changed it: a pure function of the log,
so views rebuilt from position 0 have the same bytes as views kept up event by
event. ``metadata/position.json`` records the partition's head (the position
every view of the partition reflects) and is written after the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec

from domain.ids import check_id
from projections import billing, catalogue, datasets, jobs, models, pricing, users
from projections.render import encode, event_name

__all__ = [
    "PLATFORM",
    "Anchor",
    "Partition",
    "PlatformPartition",
    "TrackingView",
    "UserPartition",
    "open_partition",
    "tracking_name",
    "user_partition",
]

PLATFORM = "platform"

S = TypeVar("S")
_ABSENT = object()


def user_partition(user_id: str) -> str:
    """``users/<user_id>``, the partition of one user's events and views."""
    return f"users/{check_id(user_id, kind='user_id')}"


def tracking_name(partition: str) -> str:
    return f"{partition}/metadata/position.json"


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
    """A module that folds one kind of entity: a view per entity and a listing of them."""

    EVENTS: frozenset[str]

    def fold(self, state: S | None, event: Any) -> S: ...
    def item_name(self, root: str, state: S) -> str: ...
    def item_view(self, state: S, position: int) -> Any: ...
    def listed(self, state: S) -> Any: ...
    def listing_name(self, root: str) -> str: ...
    def listing_view(self, states: list[S], position: int) -> Any: ...


class Views:
    """View names -> (position of the last change, how to render); the names changed since the last flush."""

    def __init__(self) -> None:
        self.position = 0
        self._at: dict[str, int] = {}
        self._render: dict[str, Callable[[int], Any]] = {}
        self._dirty: set[str] = set()

    def touch(self, name: str, render: Callable[[int], Any]) -> None:
        self._at[name] = self.position
        self._render[name] = render
        self._dirty.add(name)

    def render(self, name: str) -> bytes:
        return encode(self._render[name](self._at[name]))

    def position_of(self, name: str) -> int:
        return self._at[name]

    def names(self) -> list[str]:
        return list(self._at)

    def mark_dirty(self, names: Iterable[str]) -> None:
        self._dirty.update(names)

    def take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        return dirty


class Entities(Generic[S]):
    """The entities of one family in a partition, keyed by aggregate id."""

    def __init__(self, family: Family[S], root: str, views: Views) -> None:
        self.family = family
        self.items: dict[UUID, S] = {}
        self._listed: dict[UUID, Any] = {}
        self._views = views
        self._listing = family.listing_name(root)
        self._root = root

    def apply(self, event: Any) -> S:
        key = event.originator_id
        state = self.family.fold(self.items.get(key), event)
        self.items[key] = state
        self._views.touch(self.family.item_name(self._root, state), lambda pos: self.item_view(key, pos))
        listed = self.family.listed(state)
        if listed != self._listed.get(key, _ABSENT):
            self._listed[key] = listed
            self._views.touch(self._listing, self.listing_view)
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
        self.views.touch(tracking_name(self.name), self._tracking_view)

    def _tracking_view(self, position: int) -> TrackingView:
        commit = self.anchor(position) if self.anchor is not None else None
        return TrackingView(position, self.name, *(commit or (None, None)))


class UserPartition(Partition):
    """``users/<id>``: jobs, datasets, models and billing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._owned = re.compile(
            re.escape(name) + r"/(metadata/(jobs|datasets|models|billing|billing_history|position)\.json"
            r"|jobs/[^/]+/status\.json|data/[^/]+/metadata\.json|models/[^/]+/metadata\.json)"
        )
        self.jobs = Entities(jobs, name, self.views)  # type: ignore[arg-type]
        self.datasets = Entities(datasets, name, self.views)  # type: ignore[arg-type]
        self.models = Entities(models, name, self.views)  # type: ignore[arg-type]
        self.billing = billing.BillingState()
        self._route(jobs.EVENTS, self.jobs.apply)
        self._route(datasets.EVENTS, self.datasets.apply)
        self._route(models.EVENTS, self.models.apply)
        self._route(billing.EVENTS, self._apply_billing)

    def _apply_billing(self, event: Any) -> None:
        old, self.billing = self.billing, billing.fold(self.billing, event)
        changed = billing.touched(old, self.billing, event)
        if billing.BILLING in changed:
            self.views.touch(billing.billing_name(self.name), self._billing_view)
        if billing.HISTORY in changed:
            self.views.touch(billing.history_name(self.name), self._history_view)

    def _billing_view(self, position: int) -> billing.BillingView:
        return billing.billing_view(self.billing, position)

    def _history_view(self, position: int) -> billing.HistoryView:
        return billing.history_view(self.billing, position)


class PlatformPartition(Partition):
    """``platform``: users, the price list (and each user's copy of it), the base-model catalogue."""

    _owned = re.compile(
        r"platform/metadata/(users|gpu_pricing|base_models|position)\.json"
        r"|users/[^/]+/metadata/(user_info|gpu_pricing)\.json"
    )

    def __init__(self, name: str = PLATFORM) -> None:
        super().__init__(name)
        self.users = Entities(users, name, self.views)  # type: ignore[arg-type]
        self.pricing = pricing.PricingState()
        self.catalogue: dict[str, catalogue.BaseModel] = {}
        self._route(users.EVENTS, self._apply_user)
        self._route(pricing.EVENTS, self._apply_price)
        self._route(catalogue.EVENTS, self._apply_catalogue)

    def view_prefixes(self, *, deep: bool = False) -> list[str]:
        users_ = ["users/"] if deep else [f"users/{u.user_id}/metadata/" for u in self.users.items.values()]
        return [f"{self.name}/metadata/", *sorted(users_)]

    def _pricing_view(self, position: int) -> pricing.PricingView:
        return pricing.view(self.pricing, position)

    def _apply_user(self, event: Any) -> None:
        user = self.users.apply(event)
        if event_name(event) == "User.Registered":
            self.views.touch(pricing.user_name(user.user_id), self._pricing_view)

    def _apply_price(self, event: Any) -> None:
        self.pricing = pricing.fold(self.pricing, event)
        self.views.touch(pricing.name(self.name), self._pricing_view)
        for user in self.users.items.values():
            self.views.touch(pricing.user_name(user.user_id), self._pricing_view)

    def _apply_catalogue(self, event: Any) -> None:
        self.catalogue = catalogue.fold(self.catalogue, event)
        self.views.touch(catalogue.name(self.name), lambda pos: catalogue.view(self.catalogue, pos))


def open_partition(partition: str, anchor: Anchor | None = None) -> Partition:
    """An empty in-memory partition of the right kind for ``platform`` or ``users/<id>``; with an
    ``anchor`` (``projections.replay.anchor_of(app)``) its position.json names its commit."""
    part: Partition
    if partition == PLATFORM:
        part = PlatformPartition()
    else:
        kind, _, user_id = partition.partition("/")
        if kind != "users" or user_partition(user_id) != partition:
            raise ValueError(f"not a partition name (platform or users/<id>): {partition!r}")
        part = UserPartition(partition)
    part.anchor = anchor
    return part
