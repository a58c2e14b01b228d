"""The HTTP client of the API: auth header, error decoding, streamed upload and download.

Every failure leaves this module as a ``CliError`` (``raise ... from exc``):

- a response >= 400 carries the server's ``{"error": {"code", "message", "where"}}``;
- a transport failure (refused, timeout, dropped stream) names the URL and what to try.

httpx is imported here only, and this module is imported only by commands
that talk to the server, so ``--help`` stays fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import msgspec

from cli.errors import CliError

__all__ = ["CHUNK", "SHA256_HEADERS", "SIZE_HEADERS", "ApiClient", "Download"]

CHUNK = 1 << 20
# Headers the download route may use for the archive's size and digest (first found wins).
SIZE_HEADERS = ("x-content-size", "x-tune-size", "content-length")
SHA256_HEADERS = ("x-content-sha256", "x-tune-sha256", "x-checksum-sha256", "digest")

Progress = Callable[[int], None]


class Download(msgspec.Struct):
    """What a finished download received: size, our digest, and the one the server announced."""

    size: int
    sha256: str
    expected_size: int | None
    expected_sha256: str | None


def _decode_error(resp: httpx.Response, *, signed_in: bool) -> CliError:
    """The server's error as a CliError; a refused token (``signed_in``) points at ``tune login``.

    A 401 to a request without a token is the login itself failing (a wrong password):
    suggesting the command just run would send the user in a circle.
    """
    status = resp.status_code
    try:
        body = msgspec.json.decode(resp.read())
        err = body["error"]
        message = str(err.get("message") or resp.reason_phrase)
        code, where = err.get("code"), err.get("where")
    except Exception:  # not our error shape (a proxy, a crash page): show its first line
        text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason_phrase
        message, code, where = text or f"HTTP {status}", None, None
    if status == 401 and signed_in:
        message = f"{message}; run `tune login`"
    return CliError(message, code=code, where=where, status=status)


def _transport_error(exc: httpx.HTTPError, base_url: str) -> CliError:
    if isinstance(exc, httpx.ConnectError):
        return CliError(
            f"cannot reach the API at {base_url} ({_reason(exc)}); start it with `tune serve` "
            "or point --api-url / TUNE_API_URL at a running server"
        )
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"the API at {base_url} did not answer in time ({type(exc).__name__})")
    return CliError(f"connection to {base_url} failed: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


def _decode(data: bytes, type: Any, what: str) -> Any:
    """The reply as ``type`` (an ``api.schemas`` Struct); a reply of another shape is a CliError."""
    if not data:
        return None
    try:
        return msgspec.json.decode(data, type=type)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise CliError(f"unexpected reply from {what}: {exc}") from exc


def _sha256_header(value: str) -> str:
    """Accept ``hex``, ``sha256=hex`` or ``SHA-256=hex``."""
    value = value.strip()
    if "=" in value:
        value = value.split("=", 1)[1]
    return value.lower()


class ApiClient:
    """A thin, synchronous client of the tune API."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._signed_in = bool(token)
        headers = {"User-Agent": "tune-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain JSON calls -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        type: Any = Any,
    ) -> Any:
        """Send ``body`` (a Struct or builtins) as JSON; decode the reply as ``type``."""
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else None
        with self._stream(method, path, content=content, params=params, headers=headers) as resp:
            data = resp.read()
        return _decode(data, type, f"{method} {path}")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # -- streams ----------------------------------------------------------------------------

    @contextmanager
    def _stream(
        self, method: str, path: str, *, timeout: Any = httpx.USE_CLIENT_DEFAULT, **kw: Any
    ) -> Iterator[httpx.Response]:
        """Open a response; raise CliError for transport failures and statuses >= 400."""
        try:
            with self._http.stream(method, path, timeout=timeout, **kw) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _decode_error(resp, signed_in=self._signed_in)
                yield resp
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from exc

    def upload(
        self,
        path: str,
        file: Path,
        *,
        params: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
        type: Any = Any,
    ) -> Any:
        """Stream ``file`` as the request body (Content-Length set), reporting bytes sent."""
        size = file.stat().st_size

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as fh:
                while block := fh.read(CHUNK):
                    if on_progress:
                        on_progress(len(block))
                    yield block

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._stream(
            "POST",
            path,
            content=chunks(),
            params=params,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
        ) as resp:
            data = resp.read()
        return _decode(data, type, f"POST {path}")

    def download(
        self,
        path: str,
        dest: BinaryIO,
        *,
        on_start: Callable[[int | None], None] | None = None,
        on_progress: Progress | None = None,
    ) -> Download:
        """Stream the body into ``dest``, hashing it; return sizes and digests to verify."""
        digest = hashlib.sha256()
        received = 0
        with self._stream("GET", path, timeout=httpx.Timeout(None, connect=10.0)) as resp:
            size_text = next((resp.headers[h] for h in SIZE_HEADERS if h in resp.headers), None)
            sha_text = next((resp.headers[h] for h in SHA256_HEADERS if h in resp.headers), None)
            expected_size = int(size_text) if size_text and size_text.isdigit() else None
            if on_start:
                on_start(expected_size)
            for block in resp.iter_bytes(CHUNK):
                dest.write(block)
                digest.update(block)
                received += len(block)
                if on_progress:
                    on_progress(len(block))
        return Download(
            size=received,
            sha256=digest.hexdigest(),
            expected_size=expected_size,
            expected_sha256=_sha256_header(sha_text) if sha_text else None,
        )

    def stream_events(self, method: str, path: str, *, body: Any = None) -> Iterator[str]:
        """The data of each server-sent event of the reply to ``body`` (JSON), as they arrive."""
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        with self._stream(
            method, path, content=content, headers=headers, timeout=httpx.Timeout(None, connect=10.0)
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    yield line[5:].removeprefix(" ")

    def stream_text(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[str]:
        """Yield decoded text as the server sends it (for ``logs --follow``)."""
        with self._stream("GET", path, params=params, timeout=httpx.Timeout(None, connect=10.0)) as resp:
            yield from resp.iter_text()
