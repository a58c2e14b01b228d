"""A user's training dataset: uploaded, then validated or rejected, and finally deleted.

::

    uploaded ─► validated ─► deleted
        └─────► rejected ──► deleted        (uploaded ─► deleted too)

A dataset used by an active job cannot be deleted: ``delete`` is told the active job ids
and names them in its ``Conflict``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.base import Deletable, check_count, check_text
from domain.errors import Conflict, ValidationFailed
from domain.ids import check_id, check_ids

__all__ = ["Dataset", "DatasetFields", "check_filename", "check_sha256"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValidationFailed("sha256 must be 64 lower-case hex digits", where="sha256")


def check_filename(filename: str) -> None:
    """A plain file name: 1-255 characters, no path separators, not ``.`` or ``..``, no surrounding
    spaces, and no invisible characters.

    Invisible means a control character (``Cc``: ``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``), a format
    character (``Cf``: the bidirectional controls U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C,
    zero-width characters, the byte-order mark...), a line or paragraph separator or a lone
    surrogate: they make a name display as something it is not (``evil\\u202elmth.jsonl`` shows as
    ``evilnoj.shtml``) or break the lines of a listing.
    """
    if (
        not isinstance(filename, str)
        or not 1 <= len(filename) <= 255
        or any(c in filename for c in "/\\\0")
        or filename in (".", "..")
        or filename != filename.strip()
    ):
        raise ValidationFailed(f"not a plain file name: {filename!r:.60}", where="filename")
    hidden = next((c for c in filename if unicodedata.category(c) in _INVISIBLE), None)
    if hidden is not None:
        named = " ".join(filter(None, (f"U+{ord(hidden):04X}", unicodedata.name(hidden, ""))))
        raise ValidationFailed(
            f"the file name contains {named}, an invisible control or formatting character; "
            f"rename the file: {filename!r:.80}",
            where="filename",
        )


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class DatasetFields:
    """What a ``Dataset`` knows, set by its events (declared here, not in the aggregate's body:
    see ``domain.base``)."""

    dataset_id: str
    user_id: str
    filename: str
    size_bytes: int
    sha256: str
    status: str
    format: str | None
    rows: int | None
    stats: dict[str, Any]
    errors: list[dict[str, Any]]
    uploaded_at: datetime
    updated_at: datetime


class Dataset(Deletable, DatasetFields):
    """``status``: uploaded, validated, rejected, deleted."""

    ID_KIND, ID_KEY = "dataset", "dataset_id"

    class Uploaded(Aggregate.Created):
        dataset_id: str
        user_id: str
        filename: str
        size_bytes: int
        sha256: str
        at: datetime

        def apply(self, ds: Dataset) -> None:
            ds.dataset_id, ds.user_id, ds.filename = self.dataset_id, self.user_id, self.filename
            ds.size_bytes, ds.sha256, ds.status = self.size_bytes, self.sha256, "uploaded"
            ds.format, ds.rows, ds.stats, ds.errors = None, None, {}, []
            ds.uploaded_at = ds.updated_at = self.at

    class Validated(Aggregate.Event):
        format: str
        rows: int
        stats: dict[str, Any]
        at: datetime

        def apply(self, ds: Dataset) -> None:
            ds.status, ds.format, ds.rows, ds.stats = "validated", self.format, self.rows, dict(self.stats)
            ds.updated_at = self.at

    class Rejected(Aggregate.Event):
        errors: list[dict[str, Any]]
        at: datetime

        def apply(self, ds: Dataset) -> None:
            ds.status, ds.errors, ds.updated_at = "rejected", [dict(e) for e in self.errors], self.at

    class Deleted(Deletable.Deleted):
        """Stored as ``Dataset.Deleted``."""

    @classmethod
    def upload(
        cls, *, dataset_id: str, user_id: str, filename: str, size_bytes: int, sha256: str, at: datetime
    ) -> Dataset:
        """The raw file ``filename`` (``size_bytes``, ``sha256``) is stored; it awaits validation."""
        check_ids(dataset_id=dataset_id, user_id=user_id)
        check_filename(filename)
        check_count(size_bytes, where="size_bytes")
        check_sha256(sha256)
        return cls._create_at(
            cls.Uploaded,
            at,
            dataset_id=dataset_id,
            user_id=user_id,
            filename=filename,
            size_bytes=size_bytes,
            sha256=sha256,
        )

    def validate(self, format: str, rows: int, stats: dict[str, Any], at: datetime) -> None:
        """The file passed the format rules: ``rows`` examples in ``format`` (e.g. ``chat``)."""
        self._check_status("uploaded", "validate")
        check_id(format, kind="format")
        check_count(rows, where="rows", minimum=1)
        if not isinstance(stats, dict):
            raise ValidationFailed("stats must be a mapping", where="stats")
        self._record(self.Validated, at, format=format, rows=rows, stats=dict(stats))

    def reject(self, errors: list[dict[str, Any]], at: datetime) -> None:
        """The file broke the format rules; ``errors`` are ``{"line": int | None, "message": str}``."""
        self._check_status("uploaded", "reject")
        if not errors:
            raise ValidationFailed("a rejection needs at least one error", where="errors")
        cleaned = []
        for error in errors:
            line = error.get("line") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            if line is not None:
                check_count(line, where="errors.line")
            check_text(message, where="errors.message", max_length=2000)  # type: ignore[arg-type]
            cleaned.append({"line": line, "message": message})
        self._record(self.Rejected, at, errors=cleaned)

    def check_usable(self) -> None:
        """Refuse (Conflict) unless a job may train on this dataset: it must be validated."""
        if self.status != "validated":
            raise Conflict(
                f"dataset {self.dataset_id} is {self.status}; only a validated dataset can be trained on",
                where="dataset_id",
            )

    def _check_status(self, required: str, verb: str) -> None:
        if self.status != required:
            raise Conflict(
                f"dataset {self.dataset_id} is {self.status}; cannot {verb} it (must be {required})"
            )
