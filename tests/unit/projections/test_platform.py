"""Platform folds: user_info.json, users.json, gpu_pricing.json, base_models.json."""

from __future__ import annotations

from datetime import timedelta
from functools import reduce

from domain.catalogue import BaseModelCatalogue
from domain.pricing import PriceList
from domain.user import User
from projections import catalogue, pricing, users
from projections.render import decode, encode
from tests.unit.projections.builders import Clock, events_of


def _user(clock: Clock) -> User:
    return User.register(
        user_id="u1", email="Ann@Example.com", password_hash="$argon2$secret", role="user", at=clock()
    )


def test_user_info_has_the_seed_fields_and_no_password_hash() -> None:
    clock = Clock()
    user = _user(clock)
    user.record_login(at=clock())
    user.change_password("$argon2$other", at=clock())
    user.set_quota(5, 1000, at=clock())
    state = reduce(users.fold, events_of(user), None)  # type: ignore[arg-type]
    raw = encode(users.item_view(state, 7))
    info = decode(raw)
    assert list(info)[:5] == ["position", "email", "created_at", "status", "last_login"]
    assert info["email"] == "ann@example.com" and info["status"] == "active"
    assert info["created_at"] == "2024-03-01T09:01:00Z" and info["last_login"] == "2024-03-01T09:02:00Z"
    assert info["quota"] == {"max_concurrent_jobs": 5, "max_dataset_bytes": 1000}
    assert b"argon2" not in raw


def test_suspension_shows_in_user_info_and_listing_but_login_does_not_change_the_listing() -> None:
    clock = Clock()
    user = _user(clock)
    registered = reduce(users.fold, events_of(user), None)  # type: ignore[arg-type]
    user.record_login(at=clock())
    logged_in = reduce(users.fold, events_of(user), registered)
    assert users.row(logged_in) == users.row(registered)
    user.suspend("unpaid invoice", at=clock())
    suspended = reduce(users.fold, events_of(user), logged_in)
    assert (suspended.status, suspended.suspended_reason) == ("suspended", "unpaid invoice")
    assert users.row(suspended).status == "suspended"
    user.reactivate(at=clock())
    assert reduce(users.fold, events_of(user), suspended).status == "active"


def test_pricing_shows_the_price_in_force_and_the_schedule() -> None:
    clock = Clock()
    prices = PriceList.create(at=clock())
    t1 = clock()
    prices.set_price("a100-80gb", 2_100_000, t1, at=t1)
    t2 = clock()
    prices.set_price("t4", 350_000, t2, at=t2)
    later = clock.now + timedelta(days=30)
    prices.set_price("a100-80gb", 1_900_000, later, at=clock())
    state = reduce(pricing.fold, events_of(prices), pricing.PricingState())
    view = decode(encode(pricing.view(state, 3)))
    a100 = view["prices"]["a100-80gb"]
    assert view["currency"] == "USD"
    assert (
        a100["cost_per_hour"] == 2.1 and a100["usd_micros_per_hour"] == 2_100_000
    )  # the cut is in the future
    assert [p["usd_micros_per_hour"] for p in a100["schedule"]] == [2_100_000, 1_900_000]
    assert view["prices"]["t4"]["cost_per_hour"] == 0.35
    assert encode(pricing.view(state, 3)).count(b'"cost_per_hour":2.10') == 2  # exact, two decimals


def test_catalogue_lists_base_models_by_name() -> None:
    clock = Clock()
    cat = BaseModelCatalogue.create(at=clock())
    cat.add("tiny-llama", "builtin", "tiny", at=clock())
    cat.add("smollm2", "hub", "HuggingFaceTB/SmolLM2-135M-Instruct", at=clock(), chat_template=True)
    cat.add("gone", "local", "/models/gone", at=clock())
    cat.remove("gone", at=clock())
    state = reduce(catalogue.fold, events_of(cat), {})
    view = decode(encode(catalogue.view(state, 6)))
    assert [m["name"] for m in view["base_models"]] == ["smollm2", "tiny-llama"]
    assert view["base_models"][0] == {
        "name": "smollm2",
        "source_kind": "hub",
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "chat_template": True,
        "added_at": "2024-03-01T09:03:00Z",
    }


def test_token_version_shows_in_user_info_only_once_tokens_were_revoked() -> None:
    """An older history (no ``User.TokensRevoked``) projects byte for byte as before the event existed."""
    clock = Clock()
    user = _user(clock)
    user.record_login(at=clock())
    before = reduce(users.fold, events_of(user), None)  # type: ignore[arg-type]
    assert b"token_version" not in encode(users.item_view(before, 3))
    user.suspend("unpaid invoice", at=clock())
    suspended, revoked = events_of(user)
    after = reduce(users.fold, [suspended, revoked], before)
    info = decode(encode(users.item_view(after, 5)))
    assert info["token_version"] == 1 and list(info)[-1] == "token_version"
    assert users.row(after) == users.row(users.fold(before, suspended))  # the listing row does not change
