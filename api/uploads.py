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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import multipart
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

from domain.errors import ValidationFailed

__all__ = [
    "MEDIA_TYPES",
    "FormFile",
    "FormUploadOperation",
    "UploadOperation",
    "decoded_body",
    "upload_coding",
]

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


_FIELD_MAX = 1024
"""The most bytes of a form field other than the file (``purpose``)."""


class FormFile:
    """The one file of a ``multipart/form-data`` upload (OpenAI's ``POST /v1/files``), streamed.

    ``open`` reads up to the file's part (the fields before it are kept in ``fields``, its name in
    ``filename``); ``body`` yields the file's bytes as they arrive, then reads the fields after it,
    and calls ``check(fields)`` before it ends, so a consumer that stores only a body that ends
    never stores a file whose form is refused. A second file, a field past ``_FIELD_MAX`` bytes or
    a broken form is a 400; a body that is no form, a 415.

    Args:
        chunks: the request's body.
        content_type: its ``Content-Type`` (with the form's ``boundary``).
        content_encoding: its ``Content-Encoding`` (only identity: a form is not compressed whole).
        file_field: the name of the file's part.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], content_type: str, content_encoding: str, file_field: str = "file"
    ) -> None:
        media_type, options = multipart.parse_options_header(content_type)
        if media_type != "multipart/form-data" or not options.get("boundary"):
            raise _unsupported(
                f"unsupported Content-Type {media_type!r:.80}: send a multipart/form-data form with a "
                f"'{file_field}' part",
                "Content-Type",
            )
        if content_encoding.strip().lower() not in ("", "identity"):
            raise _unsupported("a form is sent without Content-Encoding", "Content-Encoding")
        self._parser = multipart.PushMultipartParser(options["boundary"], max_segment_count=64)
        self._events = self._parse(chunks)
        self._field = file_field
        self.fields: dict[str, str] = {}
        self.filename: str | None = None

    async def _parse(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        try:
            async for chunk in chunks:
                if chunk:
                    for event in self._parser.parse(chunk):
                        yield event
            for event in self._parser.parse(b""):
                yield event
            self._parser.close()
        except multipart.MultipartError as exc:
            raise ValidationFailed(f"not a valid multipart/form-data body: {exc}", where="body") from None

    async def open(self) -> None:
        """Read up to the file's part; ValidationFailed when the form has none."""
        async for event in self._events:
            if event is None or isinstance(event, bytes | bytearray):
                continue
            if event.name == self._field and event.filename is not None:
                self.filename = event.filename
                return
            await self._read_field(event)
        raise ValidationFailed(f"the form has no file part named {self._field!r}", where=self._field)

    async def _read_field(self, segment: Any) -> None:
        if segment.filename is not None:
            raise ValidationFailed(
                f"one file per upload, in the part named {self._field!r} (got {segment.name!r:.40})",
                where=str(segment.name),
            )
        value = b""
        async for event in self._events:
            if event is None:
                break
            value += event
            if len(value) > _FIELD_MAX:
                raise ValidationFailed(
                    f"form field {segment.name!r:.40} is too long", where=str(segment.name)
                )
        self.fields[str(segment.name)] = value.decode("utf-8", "replace")

    async def body(self, check: Callable[[dict[str, str]], None]) -> AsyncIterator[bytes]:
        """The file's bytes; then the rest of the form, read and passed to ``check``."""
        async for event in self._events:
            if event is None:
                break
            yield bytes(event)
        async for event in self._events:
            if event is not None and not isinstance(event, bytes | bytearray):
                await self._read_field(event)
        check(self.fields)


@dataclass
class FormUploadOperation(Operation):
    """``POST /v1/files``'s OpenAPI operation: a ``multipart/form-data`` form of ``file`` and ``purpose``."""

    def __post_init__(self) -> None:
        form = Schema(
            type="object",  # type: ignore[arg-type]
            required=["file", "purpose"],
            properties={
                "file": Schema(type="string", format="binary", min_length=1),  # type: ignore[arg-type]
                "purpose": Schema(type="string", enum=["fine-tune"]),  # type: ignore[arg-type]
            },
        )
        self.request_body = RequestBody(
            content={"multipart/form-data": OpenAPIMediaType(schema=form)},
            required=True,
            description="The JSONL file (``file``) and ``purpose`` ``fine-tune``; another body answers 415.",
        )
