"""A toy event-sourced model for the event store's own tests: accounts opened and credited."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self.balance = 0

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


class Accounts(Application[UUID]):
    def open_account(self, owner: str) -> UUID:
        account = Account(owner)
        self.save(account)
        return account.id

    def credit(self, account_id: UUID, amount: int) -> None:
        account: Account = self.repository.get(account_id)
        account.credit(amount)
        self.save(account)

    def balance(self, account_id: UUID) -> int:
        account: Account = self.repository.get(account_id)
        return account.balance
