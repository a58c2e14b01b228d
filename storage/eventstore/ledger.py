"""``Ledger``: what this process signs commits with and checks them against, for one event bucket.

Every ``PartitionLog`` of a bucket object shares the bucket's ``Ledger`` (``ledger_for``): the
role's signing key, the keyring trusted through the root public key, and the witness. An entry
point hands its own (``configure_ledger(bucket, Ledger(...))``, from ``LedgerSettings`` in its
``Settings``); a bucket opened without one gets the default from the environment, so the event
store signs wherever it is opened (the quick start included):

==========================  =====================================================  =====================
variable                    meaning                                                default
==========================  =====================================================  =====================
``TUNE_ROLE``               the role writing (names its key file)                  ``embedded``
``TUNE_SIGNING_KEY``        the role's Ed25519 private key (base64 seed or PEM)    ``$TUNE_HOME/keys/
                                                                                   <role>.ed25519``
                                                                                   (0600, created)
``TUNE_ROOT_PUBLIC_KEY``    the root public key the keyring is trusted through     from ``$TUNE_HOME/
                            (base64 or PEM)                                        keys/root.ed25519``
``TUNE_WITNESS``            the witness bucket URL (``witness``)                   unset: unwitnessed
``TUNE_WITNESS_EVERY``      publish the head at least every N commits              ``1``
``TUNE_WITNESS_EVERY_S``    ... and at most T seconds after an unpublished commit  ``60``
==========================  =====================================================  =====================

Before its first signed commit a writer makes sure its key is in the keyring: with the root
private key at hand (``$TUNE_HOME/keys/root.ed25519``, created by the embedded default when no
``TUNE_ROOT_PUBLIC_KEY`` says the root is kept elsewhere) it publishes the entry; without it, the
entry must be there already (an operator published it: ``python -m storage.eventstore.signing``),
else the write is refused (DataError) rather than made with a key no one trusts.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import DataError

from storage.bucket import Bucket
from storage.eventstore.signing import (
    ROOT_ROLE,
    Keyring,
    SigningKey,
    encode_public_key,
    key_id_of,
    load_key,
    load_or_create_key,
    parse_private_key,
    parse_public_key,
    publish_key,
)
from storage.eventstore.verified import VerifiedSegments, verified_segments
from storage.eventstore.witness import Witness
from storage.layout import keyring_prefix
from storage.open import home_from_env

__all__ = ["Ledger", "LedgerSettings", "configure_ledger", "ledger_for"]


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number (got {text!r})") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive (got {value})")
    return value


class LedgerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a process signs and witnesses its commits (see the module's table)."""

    role: str = "embedded"
    signing_key: str | None = None
    root_public_key: str | None = None
    witness_url: str | None = None
    witness_every_commits: int = 1
    witness_every_s: float = 60.0
    sign: bool = True
    """False: write unsigned commits (benches measuring the cost of signing; never in production)."""

    def __repr__(self) -> str:  # the key never reaches a log
        return (f"LedgerSettings(role={self.role!r}, witness_url={self.witness_url!r}, "
                f"sign={self.sign})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LedgerSettings:
        return cls(
            role=env.get("TUNE_ROLE") or "embedded",
            signing_key=env.get("TUNE_SIGNING_KEY") or None,
            root_public_key=env.get("TUNE_ROOT_PUBLIC_KEY") or None,
            witness_url=env.get("TUNE_WITNESS") or None,
            witness_every_commits=int(_positive(env, "TUNE_WITNESS_EVERY", 1)),
            witness_every_s=_positive(env, "TUNE_WITNESS_EVERY_S", 60.0),
        )


class Ledger:
    """The signing key, trusted keyring and witness of one event bucket, each made when first needed."""

    def __init__(self, bucket: Bucket, home: Path, settings: LedgerSettings | None = None) -> None:
        self.bucket = bucket
        self.home = home
        self.settings = settings or LedgerSettings()
        self._lock = threading.RLock()
        self._signer: SigningKey | None = None
        self._keyring: Keyring | None = None
        self._witness: Witness | None = None
        self._published = False

    def __repr__(self) -> str:
        return f"Ledger({self.bucket.url!r}, {self.settings!r})"

    @classmethod
    def unsigned(cls, bucket: Bucket) -> Ledger:
        """Neither sign nor verify nor witness (benches measuring what signing costs)."""
        return cls(bucket, Path("/nonexistent"), LedgerSettings(sign=False))

    @property
    def signs(self) -> bool:
        return self.settings.sign

    def signer(self) -> SigningKey | None:
        """The role's key (loaded, or created under the home, on first use); None when not signing."""
        if not self.settings.sign:
            return None
        with self._lock:
            if self._signer is None:
                if self.settings.signing_key:
                    private = parse_private_key(self.settings.signing_key)
                    self._signer = SigningKey(self.settings.role, private)
                else:
                    self._signer = load_or_create_key(self.home, self.settings.role)
            return self._signer

    def keyring(self) -> Keyring | None:
        """The keys the root vouches for; None when no root public key is known here (nothing to
        trust a key through: commits are then read unverified)."""
        if not self.settings.sign:
            return None
        with self._lock:
            if self._keyring is None:
                root = self._root_public()
                if root is not None:
                    self._keyring = Keyring(self.bucket, root)
            return self._keyring

    def verified_segments(self) -> VerifiedSegments | None:
        """The segments verified under this ledger's root key, remembered under the home (see
        ``storage.eventstore.verified``); None when nothing is verified (no keyring)."""
        keyring = self.keyring()
        if keyring is None:
            return None
        return verified_segments(self.home, keyring.root_key_id)

    def witness(self) -> Witness | None:
        """The witness bucket (``TUNE_WITNESS``), or None."""
        url = self.settings.witness_url
        if not url:
            return None
        with self._lock:
            if self._witness is None:
                from storage.open import open_bucket

                self._witness = Witness(open_bucket(url), every_commits=self.settings.witness_every_commits,
                                        every_s=self.settings.witness_every_s)
            return self._witness

    def ready_signer(self) -> SigningKey | None:
        """The signer, once its key is in the keyring (published here when the root key is at hand):
        what a writer calls before its first append. DataError if it is not and cannot be."""
        signer = self.signer()
        if signer is None:
            return None
        with self._lock:
            if not self._published:
                self._publish(signer)
                self._published = True
            return signer

    def role_env(self, role: str) -> dict[str, str]:
        """What a process of ``role`` this one starts (a job runner) needs to write commits this ledger
        trusts: ``TUNE_ROLE``, its own key (``TUNE_SIGNING_KEY``: made under this home and published
        here if need be) and the root public key (``TUNE_ROOT_PUBLIC_KEY``), so it need not share
        this process's home. Secrets: hand them to that process alone. Empty when not signing."""
        if not self.settings.sign:
            return {}
        with self._lock:
            key = load_or_create_key(self.home, role)
            self._publish(key)
            root = self._root_public()
        env = {"TUNE_ROLE": role, "TUNE_SIGNING_KEY": key.seed()}
        if root is not None:
            env["TUNE_ROOT_PUBLIC_KEY"] = encode_public_key(root)
        return env

    def _publish(self, signer: SigningKey) -> None:
        """Make sure ``signer``'s key is in the keyring (DataError if it is not and cannot be)."""
        with self._lock:
            keyring = self.keyring()
            if keyring is None or keyring.public_key(signer.key_id) is None:
                root = self._root_private()
                if root is None:
                    raise DataError(
                        f"the signing key {signer.key_id} of role {signer.role!r} is not in the keyring "
                        f"({keyring_prefix()} of {self.bucket.url}) and no root key is here to publish it: "
                        "publish it with the root key (python -m storage.eventstore.signing publish)")
                publish_key(self.bucket, root, signer)
                self._keyring = None  # read again: the root (and the entry) may be new
                keyring = self.keyring()
                if keyring is None or keyring.public_key(signer.key_id) is None:
                    raise DataError(f"the keyring entry of key {signer.key_id} does not verify")

    def _root_public(self) -> Ed25519PublicKey | None:
        if self.settings.root_public_key:
            return parse_public_key(self.settings.root_public_key)
        root = load_key(self.home, ROOT_ROLE)
        return root.public if root is not None else None

    def _root_private(self) -> SigningKey | None:
        """The root key under the home; created there (the embedded default) unless
        ``TUNE_ROOT_PUBLIC_KEY`` says the root is kept elsewhere."""
        configured = self.settings.root_public_key
        if configured:
            root = load_key(self.home, ROOT_ROLE)
            if root is None or root.key_id != key_id_of(parse_public_key(configured)):
                return None
            return root
        return load_or_create_key(self.home, ROOT_ROLE)


_ledgers: weakref.WeakKeyDictionary[Bucket, Ledger] = weakref.WeakKeyDictionary()
_ledgers_lock = threading.Lock()


def configure_ledger(bucket: Bucket, ledger: Ledger) -> Ledger:
    """Make ``ledger`` the one every log of this bucket object signs and checks with (set it before
    the bucket's first log is opened: a log keeps the ledger it was opened with)."""
    with _ledgers_lock:
        _ledgers[bucket] = ledger
    return ledger


def ledger_for(bucket: Bucket, env: Mapping[str, str] | None = None) -> Ledger:
    """The bucket's ledger: the one configured, else the default from ``env`` (``os.environ``), kept."""
    with _ledgers_lock:
        ledger = _ledgers.get(bucket)
        if ledger is None:
            env = os.environ if env is None else env
            ledger = _ledgers[bucket] = Ledger(bucket, home_from_env(env), LedgerSettings.from_env(env))
        return ledger


def _forget_after_fork() -> None:
    global _ledgers_lock
    _ledgers.clear()
    _ledgers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
