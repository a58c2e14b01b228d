"""``PlatformApp``: the platform partition's Application (users, the email index, prices, base models,
the hardware on offer).

See ``domain.applications`` for the conventions every command follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from eventsourcing.utils import EnvType

from domain.base import check_utc
from domain.catalogue import BaseModelCatalogue
from domain.errors import Conflict, NotFound
from domain.hardware import HardwareOffers, combined_offers
from domain.ids import new_id
from domain.partition_app import PartitionApplication
from domain.partitions import PLATFORM_EVENTS
from domain.pricing import DEFAULT_PRICES_USD_MICROS_PER_HOUR, DEFAULT_SERVING_PRICES, PriceList, ServingPrice
from domain.read_models import (
    BaseModelView,
    PriceListView,
    PriceView,
    UserCredentials,
    UserView,
    base_model_views,
    user_credentials,
    user_view,
)
from domain.user import User, normalize_email
from domain.user_email import UserEmail

__all__ = ["PlatformApp"]


class PlatformApp(PartitionApplication):
    """Users, the email index, the price list and the base-model catalogue.

    Commands: ``register_user``, ``record_login``, ``change_password``, ``suspend_user``,
    ``revoke_tokens``, ``reactivate_user``, ``set_quota``, ``set_price``, ``ensure_default_prices``,
    ``set_serving_price``, ``ensure_default_serving_prices``,
    ``add_base_model``, ``remove_base_model``, ``ensure_base_models``, ``offer_hardware``.
    Queries: ``get_user``, ``find_user_by_email``, ``get_credentials``, ``price_at``,
    ``price_list``, ``serving_price_at``, ``serving_prices``, ``base_models``, ``get_base_model``,
    ``hardware_offers``.
    """

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__({"TUNE_PARTITION": PLATFORM_EVENTS, **(env or {})})

    # ---- users ----

    def register_user(
        self, email: str, password_hash: str, role: str, at: datetime, *, user_id: str | None = None
    ) -> str:
        """A new active user; Conflict if the email (case-insensitive) or the id is taken."""
        email = normalize_email(email)
        user_id = user_id or new_id("usr")
        if self._exists(UserEmail, email):
            raise Conflict(f"email {email} is already registered", where="email", code="email_taken")
        self._check_new(User, user_id, "user_id")
        user = User.register(user_id=user_id, email=email, password_hash=password_hash, role=role, at=at)
        claim = UserEmail.claim(email=email, user_id=user_id, at=at)
        self._save(user, claim)
        return user_id

    def record_login(self, user_id: str, at: datetime) -> UserView:
        """Forbidden (code ``suspended``) for a suspended user."""
        return self._user(user_id, None, lambda u: u.record_login(at))

    def change_password(
        self, user_id: str, password_hash: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.change_password(password_hash, at))

    def suspend_user(
        self, user_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.suspend(reason, at))

    def revoke_tokens(
        self, user_id: str, reason: str, at: datetime, *, expected_version: int | None = None
    ) -> UserView:
        """Every token issued to the user until now is refused (suspend and change_password do it too)."""
        return self._user(user_id, expected_version, lambda u: u.revoke_tokens(reason, at))

    def reactivate_user(self, user_id: str, at: datetime, *, expected_version: int | None = None) -> UserView:
        return self._user(user_id, expected_version, lambda u: u.reactivate(at))

    def set_quota(
        self,
        user_id: str,
        max_concurrent_jobs: int,
        max_dataset_bytes: int,
        at: datetime,
        *,
        expected_version: int | None = None,
    ) -> UserView:
        return self._user(
            user_id, expected_version, lambda u: u.set_quota(max_concurrent_jobs, max_dataset_bytes, at)
        )

    def get_user(self, user_id: str) -> UserView:
        return user_view(self._load(User, user_id, "user_id"))

    def find_user_by_email(self, email: str) -> UserView | None:
        user = self._user_by_email(email)
        return None if user is None else user_view(user)

    def get_credentials(self, email: str) -> UserCredentials | None:
        """The password hash and status for a login check (None if no such email)."""
        user = self._user_by_email(email)
        return None if user is None else user_credentials(user)

    def _user_by_email(self, email: str) -> User | None:
        claim = self._find(UserEmail.create_id(normalize_email(email)))
        return None if claim is None else self._load(User, claim.user_id, "user_id")

    def _user(self, user_id: str, expected_version: int | None, action: Callable[[User], None]) -> UserView:
        return user_view(self._update(User, user_id, "user_id", expected_version, action))

    # ---- prices ----

    def set_price(
        self, gpu_type: str, usd_micros_per_hour: int, effective_at: datetime, at: datetime
    ) -> PriceView:
        """From ``effective_at`` on, one ``gpu_type`` GPU costs ``usd_micros_per_hour`` an hour.

        ``effective_at`` is ``at`` or later: a price is never set in the past (ValidationFailed).
        """
        price_list = self._price_list_or_new(at)
        price_list.set_price(gpu_type, usd_micros_per_hour, effective_at, at)
        self._save(price_list)
        return PriceView(
            gpu_type=gpu_type, usd_micros_per_hour=usd_micros_per_hour, effective_at=check_utc(effective_at)
        )

    def ensure_default_prices(self, at: datetime, *, effective_at: datetime | None = None) -> list[str]:
        """Price every default GPU type that has no price yet (from ``effective_at``, default ``at``).

        Returns the GPU types priced now; a second call adds nothing.
        """
        price_list = self._price_list_or_new(at)
        added = [t for t in DEFAULT_PRICES_USD_MICROS_PER_HOUR if t not in price_list.prices]
        for gpu_type in added:
            price_list.set_price(
                gpu_type, DEFAULT_PRICES_USD_MICROS_PER_HOUR[gpu_type], effective_at or at, at
            )
        if price_list.pending_events:
            self._save(price_list)
        return added

    def price_at(self, gpu_type: str, t: datetime) -> int:
        """Micro-dollars per GPU-hour in force at ``t``; NotFound if ``gpu_type`` had no price then."""
        return self._price_list().price_at(gpu_type, t)

    def price_list(self, at: datetime) -> PriceListView:
        """Prices in force at ``at`` and changes scheduled after it."""
        at = check_utc(at)
        prices: dict[str, PriceView] = {}
        scheduled: list[PriceView] = []
        for gpu_type, effective_at, micros in self._price_list().entries():
            view = PriceView(gpu_type=gpu_type, usd_micros_per_hour=micros, effective_at=effective_at)
            if effective_at <= at:
                prices[gpu_type] = view
            else:
                scheduled.append(view)
        return PriceListView(at=at, prices=[prices[t] for t in sorted(prices)], scheduled=scheduled)

    def set_serving_price(
        self, base_model: str, price: ServingPrice, effective_at: datetime, at: datetime
    ) -> ServingPrice:
        """From ``effective_at`` (now or later) on, completions on ``base_model`` (``"*"``: any base
        model without a price of its own) cost ``price`` per million prompt / completion tokens."""
        price_list = self._price_list_or_new(at)
        price_list.set_serving_price(base_model, ServingPrice(*price), effective_at, at)
        self._save(price_list)
        return ServingPrice(*price)

    def ensure_default_serving_prices(self, at: datetime) -> list[str]:
        """Price every default base model (``domain.pricing.DEFAULT_SERVING_PRICES``) not priced yet, from
        ``at``; returns the names priced now."""
        price_list = self._price_list_or_new(at)
        added = [name for name in DEFAULT_SERVING_PRICES if name not in price_list.serving_prices]
        for name in added:
            price_list.set_serving_price(name, ServingPrice(*DEFAULT_SERVING_PRICES[name]), at, at)
        if price_list.pending_events:
            self._save(price_list)
        return added

    def serving_price_at(self, base_model: str, t: datetime) -> ServingPrice:
        """Per million prompt / completion tokens on ``base_model`` at ``t`` (``PriceList``'s rule)."""
        return self._price_list().serving_price_at(base_model, t)

    def serving_prices(self) -> list[tuple[str, datetime, ServingPrice]]:
        """Every serving price ever set, by base model then time (``[]`` before any)."""
        try:
            return self._price_list().serving_entries()
        except NotFound:
            return []

    def _price_list(self) -> PriceList:
        return self._load_id(PriceList, PriceList.create_id(), "no prices are set yet", "gpu_type")

    def _price_list_or_new(self, at: datetime) -> PriceList:
        try:
            return self._price_list()
        except NotFound:
            return PriceList.create(at)

    # ---- base models ----

    def add_base_model(
        self, name: str, source_kind: str, source: str, at: datetime, *, chat_template: bool = True
    ) -> BaseModelView:
        catalogue = self._catalogue_or_new(at)
        catalogue.add(name, source_kind, source, at, chat_template=chat_template)
        self._save(catalogue)
        return next(v for v in base_model_views(catalogue) if v.name == name)

    def ensure_base_models(self, entries: Iterable[tuple[str, str, str]], at: datetime) -> list[str]:
        """Add each ``(name, source_kind, source)`` not in the catalogue yet; returns the names added."""
        catalogue = self._catalogue_or_new(at)
        added = []
        for name, source_kind, source in entries:
            if name not in catalogue.models:
                catalogue.add(name, source_kind, source, at)
                added.append(name)
        if catalogue.pending_events:
            self._save(catalogue)
        return added

    def remove_base_model(self, name: str, at: datetime) -> None:
        catalogue = self._load_id(
            BaseModelCatalogue, BaseModelCatalogue.create_id(), f"no base model {name!r}", "base_model"
        )
        catalogue.remove(name, at)
        self._save(catalogue)

    def base_models(self) -> list[BaseModelView]:
        catalogue = self._find(BaseModelCatalogue.create_id())
        return [] if catalogue is None else base_model_views(catalogue)

    def get_base_model(self, name: str) -> BaseModelView:
        for view in self.base_models():
            if view.name == name:
                return view
        raise NotFound(f"no base model {name!r}", where="base_model")

    def _catalogue_or_new(self, at: datetime) -> BaseModelCatalogue:
        catalogue = self._find(BaseModelCatalogue.create_id())
        return BaseModelCatalogue.create(at) if catalogue is None else catalogue

    # ---- hardware ----

    def offer_hardware(self, source: str, offers: Mapping[str, int], at: datetime) -> bool:
        """``source`` (a dispatcher's backend, ``operator``) offers ``offers`` (GPU type -> the largest
        count one job may use; empty: nothing). Recorded only when it changed; True if recorded."""
        hardware = self._find(HardwareOffers.create_id())
        if not isinstance(hardware, HardwareOffers):
            hardware = HardwareOffers.create(at)
        if not hardware.offer(source, offers, at):
            return False
        self._save(hardware)
        return True

    def hardware_offers(self) -> dict[str, int]:
        """What every source offers together (``domain.hardware``; ``BEFORE_ANY_OFFER`` if none ever did)."""
        hardware = self._find(HardwareOffers.create_id())
        return combined_offers(hardware.sources if isinstance(hardware, HardwareOffers) else None)
