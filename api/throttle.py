"""``LoginThrottle``: backoff after failed logins, per account and per client address.

Each key (an account, as the email typed, known or not, so the answers say nothing about
which accounts exist; or a client address) may fail ``free`` logins in a row. Every failure
after those closes the key for ``base_s * 2**(n - 1)`` seconds (n: failures past ``free``),
at most ``max_s``. While a key is closed, a login naming it is refused at once (429 with
``Retry-After``) before any password is checked: a guess made then is never tried, and the
refusal costs no argon2 work. With the defaults (5 free failures an account, 1 s doubling to
15 minutes) a patient guesser gets about a hundred tries a day; an address gets 20 free
failures, as many users may share one (an office behind NAT).

A success clears the account's count but not the address's: a guesser's own account must
not reset the count of the address it guesses from. A count is forgotten ``forget_s`` after
its last failure. Each time a key closes, a warning names the account and the address (never
the password, nor an email that no account has: it may be a password typed in the wrong field).

The state is this process's memory: a restart forgets it, and N server processes each count
on their own (a guesser gets at most N times as many tries). At most ``max_keys`` keys are
kept; the least recently failed go first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import RateLimited

__all__ = ["LoginThrottle"]

log = logging.getLogger("api.login")


@dataclass
class _Failures:
    count: int = 0
    last_at: float = 0.0
    closed_until: float = 0.0


class LoginThrottle:
    """Failed logins per account and per address, and the backoff they earn (module docstring).

    Args:
        account_free: failures in a row an account may have before it is closed.
        address_free: the same for a client address.
        base_s: the first closure; each further failure doubles it.
        max_s: the longest closure.
        forget_s: a key's count is dropped this long after its last failure.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        account_free: int = 5,
        address_free: int = 20,
        base_s: float = 1.0,
        max_s: float = 900.0,
        forget_s: float = 3600.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = {"account": account_free, "address": address_free}
        self.base_s, self.max_s, self.forget_s, self.max_keys = base_s, max_s, forget_s, max_keys
        self.clock = clock
        self._keys: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()

    def check(self, account: str, address: str) -> None:
        """Raise RateLimited (with ``retry_after_s``) while the account or the address is closed."""
        now = self.clock()
        with self._lock:
            wait = max(
                self._closed_for(("account", _account(account)), now),
                self._closed_for(("address", address), now),
            )
        if wait > 0:
            seconds = math.ceil(wait)
            raise RateLimited(
                f"too many failed logins for this account or from this address; try again in {seconds} s",
                retry_after_s=seconds,
            )

    def failed(self, account: str, address: str, *, known_as: str | None) -> None:
        """Count a failed login; ``known_as``: the account's email if there is one (for the log)."""
        now = self.clock()
        shown = known_as or "an unknown email"
        with self._lock:
            for kind, key in (("account", _account(account)), ("address", address)):
                closed_s = self._count(kind, key, now)
                if closed_s:
                    count = self._keys[(kind, key)].count
                    log.warning(
                        "%d failed logins in a row %s: logins %s refused for %.0f s (account %s, address %s)",
                        count,
                        "for this account" if kind == "account" else "from this address",
                        "to this account" if kind == "account" else "from this address",
                        closed_s,
                        shown,
                        address,
                    )

    def succeeded(self, account: str) -> None:
        """A login to ``account`` worked: its count starts again (its address's does not)."""
        with self._lock:
            self._keys.pop(("account", _account(account)), None)

    def _closed_for(self, key: tuple[str, str], now: float) -> float:
        entry = self._keys.get(key)
        return 0.0 if entry is None else max(0.0, entry.closed_until - now)

    def _count(self, kind: str, key: str, now: float) -> float:
        """Add a failure to ``key``; how long it is now closed (0: not closed)."""
        entry = self._keys.pop((kind, key), None)
        if entry is None or now - entry.last_at > self.forget_s:
            entry = _Failures()
        entry.count += 1
        entry.last_at = now
        past = entry.count - self.free[kind]
        closed_s = min(self.max_s, self.base_s * 2.0 ** min(past - 1, 40)) if past > 0 else 0.0
        entry.closed_until = now + closed_s
        self._keys[(kind, key)] = entry  # re-inserted: the dict's order is the order of last failures
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return closed_s


def _account(email: str) -> str:
    return email.strip().lower()
