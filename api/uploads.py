"""What an upload's body may be: its media types, its one content coding, and how it is read.

A dataset is sent as the raw bytes of a JSONL file, labelled with one of
``MEDIA_TYPES`` (or not labelled: no ``Content-Type`` is read as
``application/octet-stream``); a ``charset``, when given, must be UTF-8. Anything
else, a form (``curl -F`` sends ``multipart/form-data``, ``curl --data-binary``
``application/x-www-form-urlencoded``) or an archive, answers 415 before a
byte is read or stored, naming what is accepted (``Accept-Post``).

A compressed file is sent with ``Content-Encoding: gzip``: it is decompressed
as it streams, so the size limit and the quota count the decompressed bytes
(a small bomb stops at the limit, never held whole), and the decompressed file
is what is stored. Any other coding answers 415 with ``Accept-Encoding: gzip``
(RFC 7694). A gzip body without the header is refused as well: its first bytes
give it away.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

from domain.errors import ValidationFailed

__all__ = ["MEDIA_TYPES", "UploadOperation", "decoded_body", "upload_coding"]

MEDIA_TYPES = ("application/octet-stream", "application/jsonl", "application/x-ndjson", "text/plain")
"""The labels of a JSONL file the upload accepts (no label reads as the first)."""

GZIP = "gzip"
_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_GZIP_MAGIC = b"\x1f\x8b"
_OUT_CHUNK = 1 << 16
_ACCEPTED = ", ".join(MEDIA_TYPES)
_FORM_HINT = (
    " (the file itself is the body, not a form: "
    "curl --data-binary @train.jsonl -H 'Content-Type: application/octet-stream')"
)


def _unsupported(message: str, where: str, **headers: str) -> HTTPException:
    return HTTPException(
        status_code=415, detail=message, headers={"Accept-Post": _ACCEPTED, **headers}, extra={"where": where}
    )


def upload_coding(headers: Mapping[str, str]) -> str | None:
    """Check an upload's ``Content-Type`` and ``Content-Encoding``: ``"gzip"``, or None for plain bytes.

    Raises:
        HTTPException: 415, naming the accepted media types and coding.
    """
    label = headers.get("content-type", "").strip()
    media_type, *params = [part.strip() for part in label.split(";")]
    media_type = media_type.lower() or MEDIA_TYPES[0]
    if media_type not in MEDIA_TYPES:
        hint = ""
        if media_type.startswith("multipart/") or media_type == "application/x-www-form-urlencoded":
            hint = _FORM_HINT
        elif "gzip" in media_type:
            hint = " (a gzip file: send it with Content-Encoding: gzip)"
        raise _unsupported(
            f"unsupported Content-Type {media_type!r:.80}; send one of {_ACCEPTED}{hint}", "Content-Type"
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _CHARSETS:
            raise _unsupported(
                f"unsupported charset {value.strip()!r:.40}: send the file as UTF-8, as one of {_ACCEPTED}",
                "Content-Type",
            )
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if codings == [GZIP] or codings == ["x-gzip"]:
        return GZIP
    raise _unsupported(
        f"unsupported Content-Encoding {', '.join(codings)!r:.80}; send the file as is or gzip-compressed",
        "Content-Encoding",
        **{"Accept-Encoding": GZIP},
    )


async def _refuse_gzip_magic(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through; 415 if they start as a gzip file (the header was forgotten)."""
    head = b""
    checked = False
    async for chunk in chunks:
        if not checked:
            head += chunk
            if len(head) < len(_GZIP_MAGIC):
                continue
            checked = True
            if head.startswith(_GZIP_MAGIC):
                raise _unsupported(
                    "the body is gzip-compressed: send it with Content-Encoding: gzip",
                    "Content-Encoding",
                    **{"Accept-Encoding": GZIP},
                )
            chunk, head = head, b""
        yield chunk
    if head:
        yield head


def _bad_gzip(detail: str) -> ValidationFailed:
    return ValidationFailed(f"the body is not valid gzip: {detail}", where="body")


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip stream (one or more members), at most ``_OUT_CHUNK`` bytes at a time."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    in_member = False
    async for chunk in chunks:
        pending = chunk
        while pending:
            in_member = True
            try:
                out = inflater.decompress(pending, _OUT_CHUNK)
            except zlib.error as exc:
                raise _bad_gzip(str(exc)) from None
            if out:
                yield out
            if inflater.eof:  # a member ended; what follows is the next one
                pending = inflater.unused_data
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                in_member = False
            else:
                pending = inflater.unconsumed_tail
    if in_member:
        raise _bad_gzip("it ends early")


def decoded_body(chunks: AsyncIterator[bytes], coding: str | None) -> AsyncIterator[bytes]:
    """The upload's file as it streams: decompressed when ``coding`` is gzip."""
    return _gunzip(chunks) if coding == GZIP else _refuse_gzip_magic(chunks)


@dataclass
class UploadOperation(Operation):
    """The upload's OpenAPI operation: its body is the file's bytes, in one of ``MEDIA_TYPES``."""

    def __post_init__(self) -> None:
        binary = OpenAPIMediaType(schema=Schema(type="string", format="binary", min_length=1))  # type: ignore[arg-type]
        text = OpenAPIMediaType(schema=Schema(type="string", min_length=1))  # type: ignore[arg-type]
        self.request_body = RequestBody(
            content={kind: text if kind == "text/plain" else binary for kind in MEDIA_TYPES},
            required=True,
            description=(
                "The JSONL file's bytes (not a form). Send a gzip-compressed file with "
                "``Content-Encoding: gzip``: the size limit applies to the decompressed bytes. "
                "Another Content-Type or Content-Encoding answers 415 and nothing is stored."
            ),
        )
