"""``GcsBucket``: the Bucket interface over google-cloud-storage 3.x.

``gs://bucket/prefix``: names are stored as ``prefix/<name>`` and handed back
without it. Preconditions are GCS's own ``ifGenerationMatch``; transient
errors are retried by the library's ``DEFAULT_RETRY`` (safe for every call
here: reads and deletes are idempotent, writes are whole-object and, when
conditional, generation-matched). Known limit: a create-only write whose
first response is lost and whose retry then finds its own object reports
AlreadyExists. With ``STORAGE_EMULATOR_HOST`` set the client talks to that
emulator with anonymous credentials (project ``test``); fake-gcs-server does
not enforce preconditions on resumable uploads (over 8 MiB), so keep
conditional writes small there.

HTTP connections: the client's session keeps ``HTTP_CONNECTIONS`` per host (requests keeps 10),
so the event store's parallel readers (16 threads, ``storage.eventstore.log``) and the ledger's
workers each reuse a kept connection instead of opening one, using it once and dropping it with
urllib3's "Connection pool is full" warning.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter

from storage.bucket import (
    AlreadyExists,
    Bucket,
    ObjectNotFound,
    ObjectStat,
    PreconditionFailed,
    check_name,
    check_prefix,
)

__all__ = ["GcsBucket", "gcs_client"]

_UPLOAD_CHUNK = 8 * 1024 * 1024  # resumable chunk: a multiple of 256 KiB, bounds memory per upload
HTTP_CONNECTIONS = 32
"""Connections kept per host: at least the event store's 16 reader threads, with room for writers."""


def gcs_client() -> storage.Client:
    """A client for the emulator when ``STORAGE_EMULATOR_HOST`` is set, else default credentials;
    its session keeps ``HTTP_CONNECTIONS`` connections per host."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="test", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    _keep_connections(client, HTTP_CONNECTIONS)
    return client


def _keep_connections(client: storage.Client, connections: int) -> None:
    """Replace the session's plain adapters by ones keeping ``connections`` per host (same retries);
    an adapter of another kind (mutual TLS) is left as it is."""
    session = client._http  # the library's documented seam: Client(_http=session)
    for prefix, adapter in list(session.adapters.items()):
        if type(adapter) is HTTPAdapter:
            session.mount(prefix, HTTPAdapter(pool_maxsize=connections,
                                              max_retries=adapter.max_retries))


class GcsBucket(Bucket):
    """A GCS bucket, or a prefix inside one."""

    def __init__(self, url: str, *, client: storage.Client | None = None) -> None:
        if not url.startswith("gs://"):
            raise ValueError(f"not a gs:// URL: {url!r}")
        bucket_name, _, prefix = url[len("gs://") :].partition("/")
        prefix = prefix.strip("/")
        if len(bucket_name) < 3:
            raise ValueError(f"GCS bucket names have 3+ characters: {url!r}")
        if prefix:
            check_name(prefix)
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"gs://{bucket_name}/{prefix}" if prefix else f"gs://{bucket_name}"
        self.client = client or gcs_client()
        self._bucket = self.client.bucket(bucket_name)

    def __repr__(self) -> str:
        return f"GcsBucket({self.url!r})"

    # -- reading ---------------------------------------------------------

    def read(self, name: str) -> bytes:
        return self.read_with_stat(name)[0]

    def read_with_stat(self, name: str) -> tuple[bytes, ObjectStat]:
        blob = self._blob(name)
        try:
            data = blob.download_as_bytes(retry=DEFAULT_RETRY)
        except gexc.NotFound as exc:
            raise ObjectNotFound(name) from exc
        # The download response's x-goog-generation header names the generation of these bytes.
        return data, ObjectStat(name, int(blob.generation), len(data), _md5_hex(blob.md5_hash))

    def open_read(self, name: str) -> BinaryIO:
        blob = self._get(name)  # pins the generation: every chunk comes from the same version
        return cast(BinaryIO, blob.open("rb", chunk_size=_UPLOAD_CHUNK, retry=DEFAULT_RETRY))

    def stat(self, name: str) -> ObjectStat:
        return self._stat(name, self._get(name))

    def list(self, prefix: str = "", *, start_offset: str | None = None) -> Iterator[str]:
        full_prefix = self.prefix + check_prefix(prefix)
        start = self.prefix + start_offset if start_offset else None
        blobs = self.client.list_blobs(self._bucket, prefix=full_prefix, start_offset=start,
                                       retry=DEFAULT_RETRY)
        cut = len(self.prefix)
        return (blob.name[cut:] for blob in blobs)

    # -- writing ---------------------------------------------------------

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectStat:
        blob = self._blob(name)
        try:
            blob.upload_from_string(bytes(data), content_type="application/octet-stream",
                                    if_generation_match=if_generation_match, retry=DEFAULT_RETRY)
        except gexc.PreconditionFailed as exc:
            if if_generation_match == 0:
                raise AlreadyExists(name) from exc
            raise PreconditionFailed(f"{name}: generation is not {if_generation_match}") from exc
        return self._stat(name, blob)

    def upload(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectStat:
        blob = self._blob(name)
        blob.chunk_size = _UPLOAD_CHUNK
        source = stream if hasattr(stream, "read") else _IterReader(cast(Iterable[bytes], stream))
        blob.upload_from_file(source, content_type="application/octet-stream", retry=DEFAULT_RETRY)
        return self._stat(name, blob)

    def delete(self, name: str) -> None:
        try:
            self._blob(name).delete(retry=DEFAULT_RETRY)
        except gexc.NotFound as exc:
            raise ObjectNotFound(name) from exc

    # -- internals -------------------------------------------------------

    def _blob(self, name: str) -> storage.Blob:
        return self._bucket.blob(self.prefix + check_name(name))

    def _get(self, name: str) -> storage.Blob:
        blob = self._bucket.get_blob(self.prefix + check_name(name), retry=DEFAULT_RETRY)
        if blob is None:
            raise ObjectNotFound(name)
        return blob

    @staticmethod
    def _stat(name: str, blob: storage.Blob) -> ObjectStat:
        return ObjectStat(name, int(blob.generation), int(blob.size or 0), _md5_hex(blob.md5_hash))


def _md5_hex(md5_b64: str | None) -> str | None:
    return base64.b64decode(md5_b64).hex() if md5_b64 else None


class _IterReader(io.BufferedIOBase):
    """A readable, non-seekable file over an iterable of byte chunks (what ``upload_from_file`` wants)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self._position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        want = size if size is not None and size >= 0 else None
        parts, have = [self._pending], len(self._pending)
        while want is None or have < want:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(bytes(chunk))
            have += len(chunk)
        joined = b"".join(parts)
        out, self._pending = (joined, b"") if want is None else (joined[:want], joined[want:])
        self._position += len(out)
        return out
