"""Ed25519 keys: who wrote a commit, a witnessed head, a keyring entry.

A role that writes the event log (``embedded``, ``api``, ``ledger``, ``runner``...) holds a
private key outside the bucket: ``TUNE_SIGNING_KEY`` (base64 of the 32-byte seed, or PEM) in
production, else ``$TUNE_HOME/keys/<role>.ed25519`` (PEM, 0600, created on first use). Its
public key is published in the bucket's keyring, ``platform/keyring/<key_id>.json``
(``storage.layout.keyring_entry``), a create-only object signed by the platform's root key.
A verifier trusts a commit's key only through such an entry: the root public key comes from
``TUNE_ROOT_PUBLIC_KEY`` (a verifier that holds nothing else) or from the root private key
``$TUNE_HOME/keys/root.ed25519`` (the embedded default, where one account holds every key).

A key's id is the first 32 hex digits of the SHA-256 of its raw public key: an entry cannot
hold another key under an id, and a commit names the key that signed it.

Rotation: a new key (a new ``keys/<role>.ed25519``, or a new ``TUNE_SIGNING_KEY``) gets its own
root-signed entry and signs every commit from then on; the old entry stays (entries are never
removed), so commits signed before still verify.

What is signed (each message starts with its own tag, so one kind can never pass for another):
a commit (``commit_message``: partition prefix, seq, previous commit's hash, the SHA-256 of the
commit's body without its signature), a witnessed head (``head_message``), a keyring entry
(``entry_message``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from storage.bucket import AlreadyExists, Bucket, ObjectNotFound
from storage.layout import keyring_entry, keyring_prefix
from storage.open import load_or_create_private_file

__all__ = [
    "ROOT_ROLE",
    "KeyEntry",
    "Keyring",
    "SigningKey",
    "Verdict",
    "commit_message",
    "encode_public_key",
    "entry_message",
    "head_message",
    "key_file",
    "key_id_of",
    "load_key",
    "load_or_create_key",
    "main",
    "make_entry",
    "parse_private_key",
    "parse_public_key",
    "publish_key",
]

ROOT_ROLE = "root"
K = TypeVar("K", Ed25519PrivateKey, Ed25519PublicKey)
Verdict = Literal["ok", "unknown key", "bad signature"]
_log = logging.getLogger(__name__)


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def _raw_public(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def encode_public_key(public: Ed25519PublicKey) -> str:
    """The base64 of a raw public key (what ``TUNE_ROOT_PUBLIC_KEY`` and ``parse_public_key`` take)."""
    return _raw_public(public)


class SigningKey:
    """A role's private key: ``sign(message)`` -> base64 signature."""

    def __init__(self, role: str, private: Ed25519PrivateKey) -> None:
        self.role = role
        self.private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    def __repr__(self) -> str:  # never the key itself
        return f"SigningKey({self.role!r}, {self.key_id})"

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode("ascii")

    def seed(self) -> str:
        """The base64 of the private key's 32-byte seed (what ``TUNE_SIGNING_KEY`` takes): a secret."""
        raw = self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw).decode("ascii")


    @classmethod
    def generate(cls, role: str) -> SigningKey:
        return cls(role, Ed25519PrivateKey.generate())


def parse_private_key(text: str | bytes) -> Ed25519PrivateKey:
    """A PEM (PKCS8) Ed25519 private key, or the base64 of its 32-byte seed; ValueError otherwise."""
    return _parse_key(
        text,
        lambda data: serialization.load_pem_private_key(data, password=None),
        Ed25519PrivateKey.from_private_bytes,
        Ed25519PrivateKey,
        "private key",
        "seed",
    )


def parse_public_key(text: str | bytes) -> Ed25519PublicKey:
    """A PEM Ed25519 public key, or the base64 of its 32 raw bytes; ValueError otherwise."""
    return _parse_key(
        text,
        serialization.load_pem_public_key,
        Ed25519PublicKey.from_public_bytes,
        Ed25519PublicKey,
        "public key",
        "public key",
    )


def _parse_key(
    text: str | bytes,
    from_pem: Callable[[bytes], object],
    from_raw: Callable[[bytes], K],
    kind: type[K],
    what: str,
    raw_name: str,
) -> K:
    """A PEM key of ``kind``, or one from the base64 of its 32 raw bytes; ValueError otherwise."""
    data = text.encode("ascii") if isinstance(text, str) else text
    if b"-----BEGIN" in data:
        key = from_pem(data)
        if not isinstance(key, kind):
            raise ValueError(f"not an Ed25519 {what}")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not PEM nor base64: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 {raw_name} is 32 bytes, not {len(raw)}")
    return from_raw(raw)


def key_file(home: Path, role: str) -> Path:
    """``$TUNE_HOME/keys/<role>.ed25519``."""
    return home / "keys" / f"{role}.ed25519"


def _pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


_loaded: dict[Path, Ed25519PrivateKey] = {}
_loaded_lock = threading.Lock()


def load_or_create_key(home: Path, role: str) -> SigningKey:
    """The role's key kept in ``keys/<role>.ed25519`` under ``home`` (0600), created on first use."""
    path = key_file(home, role)
    with _loaded_lock:
        private = _loaded.get(path)
        if private is None:
            data = load_or_create_private_file(home, str(path.relative_to(home)),
                                               lambda: _pem(Ed25519PrivateKey.generate()))
            private = _loaded[path] = parse_private_key(data)
    return SigningKey(role, private)


def load_key(home: Path, role: str) -> SigningKey | None:
    """The role's key under ``home`` if there is one (never created)."""
    path = key_file(home, role)
    try:
        return SigningKey(role, parse_private_key(path.read_bytes()))
    except FileNotFoundError:
        return None


# -- what is signed ------------------------------------------------------------------------


def commit_message(prefix: str, seq: int, prev_sha256: str, body_sha256: str) -> bytes:
    return f"tune-commit-v1\n{prefix}\n{seq}\n{prev_sha256}\n{body_sha256}".encode()


def head_message(partition: str, seq: int, sha256: str) -> bytes:
    return f"tune-head-v1\n{partition}\n{seq}\n{sha256}".encode()


def entry_message(key_id: str, role: str, public_key: str, created_at: str) -> bytes:
    return f"tune-key-v1\n{key_id}\n{role}\n{public_key}\n{created_at}".encode()


def _verify(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# -- the keyring ---------------------------------------------------------------------------


class KeyEntry(msgspec.Struct, frozen=True):
    """``platform/keyring/<key_id>.json``: a role's public key, vouched for by the root key."""

    key_id: str
    role: str
    public_key: str
    """Base64 of the 32 raw bytes."""
    created_at: str
    root_key_id: str
    signature: str
    """The root key's, over ``entry_message``."""


def make_entry(root: SigningKey, key: SigningKey | Ed25519PublicKey, role: str = "",
               at: datetime | None = None) -> KeyEntry:
    """The keyring entry of ``key`` (a role's key, or its public key and ``role``), signed by ``root``."""
    public_key = key.public if isinstance(key, SigningKey) else key
    role = key.role if isinstance(key, SigningKey) else role
    created = (at or datetime.now(UTC)).isoformat()
    public, key_id = _raw_public(public_key), key_id_of(public_key)
    signature = root.sign(entry_message(key_id, role, public, created))
    return KeyEntry(key_id, role, public, created, root.key_id, signature)


def publish_key(
    bucket: Bucket, root: SigningKey, key: SigningKey | Ed25519PublicKey, role: str = ""
) -> KeyEntry:
    """Put ``key``'s root-signed entry in the keyring (create-only; an entry already there is kept)."""
    entry = make_entry(root, key, role)
    with contextlib.suppress(AlreadyExists):
        bucket.create(keyring_entry(entry.key_id), msgspec.json.encode(entry))
    return entry


class Keyring:
    """The keys the root vouches for in ``bucket``'s keyring, read when first asked and again whenever
    a key id is not among them (another process may have published its key a moment ago: a commit
    of a new writer must never look forged; entries already read are not read again)."""

    def __init__(self, bucket: Bucket, root: Ed25519PublicKey) -> None:
        self.bucket = bucket
        self.root = root
        self.root_key_id = key_id_of(root)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._roles: dict[str, str] = {}
        self.untrusted: dict[str, str] = {}
        """Entries found that the root does not vouch for: name -> why."""
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def public_key(self, key_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                self._read()
                key = self._keys.get(key_id)
            return key

    def role_of(self, key_id: str) -> str | None:
        return self._roles.get(key_id) if self.public_key(key_id) is not None else None

    def verify(self, key_id: str, message: bytes, signature: str) -> Verdict:
        public = self.public_key(key_id) if key_id else None
        if public is None:
            return "unknown key"
        return "ok" if _verify(public, message, signature) else "bad signature"

    def _read(self) -> None:
        self._read_at = time.monotonic()
        for name in self.bucket.list(keyring_prefix()):
            key_id = name.removeprefix(keyring_prefix()).removesuffix(".json")
            if key_id in self._keys or name in self.untrusted:
                continue
            try:
                entry = msgspec.json.decode(self.bucket.read(name), type=KeyEntry)
                public = parse_public_key(entry.public_key)
            except (ObjectNotFound, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                self.untrusted[name] = f"not a keyring entry ({exc})"
                continue
            message = entry_message(entry.key_id, entry.role, entry.public_key, entry.created_at)
            if entry.key_id != key_id or key_id_of(public) != key_id:
                self.untrusted[name] = "its key id is not its key's"
            elif not _verify(self.root, message, entry.signature):
                self.untrusted[name] = "not signed by the root key"
            else:
                self._keys[key_id] = public
                self._roles[key_id] = entry.role
        for name, why in self.untrusted.items():
            _log.warning("keyring entry %s is not trusted: %s", name, why)


def main(argv: list[str] | None = None) -> int:
    """``python -m storage.eventstore.signing``: make a role's key, publish a public key in the keyring.

    ``new-key ROLE``                       print a new key: its seed (``TUNE_SIGNING_KEY``) on stdout, its
                                           public key and id on stderr
    ``publish --bucket URL ROLE PUBLIC``   put the public key (base64 or PEM) in the bucket's keyring,
                                           signed by the root key (``$TUNE_HOME/keys/root.ed25519``,
                                           created if absent; ``--root-key FILE`` for another)
    ``root-public``                        print the root public key (for ``TUNE_ROOT_PUBLIC_KEY``)
    """
    import argparse
    import os
    import sys

    from storage.open import home_from_env, open_bucket

    parser = argparse.ArgumentParser(prog="python -m storage.eventstore.signing", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new-key")
    new.add_argument("role")
    publish = commands.add_parser("publish")
    publish.add_argument("--bucket", required=True)
    publish.add_argument("--root-key", type=Path)
    publish.add_argument("role")
    publish.add_argument("public_key")
    commands.add_parser("root-public")
    args = parser.parse_args(argv)
    home = home_from_env(os.environ)
    if args.command == "new-key":
        key = SigningKey.generate(args.role)
        seed = key.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        print(base64.b64encode(seed).decode("ascii"))
        print(f"public key {_raw_public(key.public)} (id {key.key_id})", file=sys.stderr)
        return 0
    root = (SigningKey(ROOT_ROLE, parse_private_key(args.root_key.read_bytes()))
            if getattr(args, "root_key", None) else load_or_create_key(home, ROOT_ROLE))
    if args.command == "root-public":
        print(_raw_public(root.public))
        return 0
    entry = publish_key(open_bucket(args.bucket), root, parse_public_key(args.public_key), args.role)
    print(f"published {keyring_entry(entry.key_id)} ({entry.role}), signed by root {root.key_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
