"""Datasets: streamed upload with validation, show, list, delete (refused while a job uses it)."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import AsyncIterator

import anyio.to_thread
import msgspec

from api import schemas
from api.services.base import UserService
from api.services.jobs import JobService
from api.services.pages import EVERY, Listing, PageRequest, Pages
from api.streams import upload_async
from domain.dataset import check_filename
from domain.errors import Forbidden, TooLarge, ValidationFailed
from domain.ids import new_id
from storage import layout
from storage.bucket import check_name
from storage.datasets import process_dataset

__all__ = ["DatasetService"]

DEFAULT_FILENAME = "data.jsonl"


class _Meter:
    """Counts and hashes a body as it streams; stops it past the size limit or the quota."""

    def __init__(self, max_bytes: int, quota_left: int | None) -> None:
        self.max_bytes = max_bytes
        self.quota_left = quota_left
        self.size = 0
        self.sha256 = hashlib.sha256()

    def check(self, size: int) -> None:
        if size > self.max_bytes:
            raise TooLarge(f"the upload is larger than the limit of {self.max_bytes:,} bytes", where="body")
        if self.quota_left is not None and size > self.quota_left:
            raise Forbidden(
                f"storage quota exceeded: {self.quota_left:,} bytes of dataset storage left; "
                "delete a dataset or ask for a larger quota",
                code="quota_exceeded",
                where="body",
            )

    async def count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.check(self.size + len(chunk))
            self.size += len(chunk)
            self.sha256.update(chunk)
            yield chunk


def clean_filename(filename: str | None) -> str:
    """The base name of an uploaded file (no folders), checked; ``data.jsonl`` when none is given."""
    name = posixpath.basename((filename or "").replace("\\", "/")).strip() or DEFAULT_FILENAME
    if name in (".", ".."):
        name = DEFAULT_FILENAME
    check_filename(name)
    try:
        check_name(f"raw/{name}")
    except ValueError:
        raise ValidationFailed(
            f"not a usable file name (control characters or too long): {name!r:.60}", where="filename"
        ) from None
    return name


DATASETS = Listing(
    "datasets", schemas.DatasetRow, "dataset_id", layout.datasets, schemas.DatasetList, "datasets"
)


class DatasetService(UserService):
    """The caller's datasets."""

    def get(self, dataset_id: str) -> schemas.Dataset:
        return self.object_view(layout.dataset_metadata, "dataset", dataset_id, schemas.Dataset)

    def list(self, request: PageRequest = EVERY, state: str | None = None) -> schemas.DatasetList:
        """A page of the caller's datasets (``api.services.pages``), or all of them without paging."""
        return self.pages.reply(request, state=state)  # type: ignore[no-any-return]

    @property
    def pages(self) -> Pages:
        return Pages(self.rt, self.user_id, DATASETS)

    def quota_left(self) -> int | None:
        """Bytes of dataset storage the caller may still use (None: unlimited).

        Validated datasets count (raw and processed are kept for training); rejected ones do
        not: their raw bytes are deleted when they are rejected, only the report is kept.
        """
        limit = self.rt.quota(self.user_id).max_dataset_bytes
        if limit is None:
            return None
        used = sum(d.size_bytes for d in self.list().datasets if d.status != "rejected")  # each row counts
        return max(0, limit - used)

    async def upload(
        self, filename: str | None, body: AsyncIterator[bytes], content_length: int | None
    ) -> schemas.Dataset:
        """Stream ``body`` to ``raw/``, record it, validate it, write ``processed/`` if valid."""
        name = clean_filename(filename)
        meter = _Meter(self.rt.settings.max_upload_bytes, self.quota_left())
        if content_length is not None:
            meter.check(content_length)
        dataset_id = new_id("ds")
        raw = layout.dataset_raw(self.user_id, dataset_id, name)
        await upload_async(self.rt.bucket, raw, meter.count(body))
        if meter.size == 0:
            await anyio.to_thread.run_sync(self.rt.bucket.delete, raw)
            raise ValidationFailed("the upload is empty", where="body")
        return await anyio.to_thread.run_sync(
            self._record,
            dataset_id,
            name,
            meter.size,
            meter.sha256.hexdigest(),
            raw,
            layout.dataset_processed(self.user_id, dataset_id),
        )

    def _record(
        self, dataset_id: str, filename: str, size: int, sha256: str, raw: str, processed: str
    ) -> schemas.Dataset:
        """Validate the raw file (writing ``processed/`` if valid), then record it with its verdict.

        The upload and its verdict are one commit, made only once the file has been checked, so
        a dataset is never left ``uploaded``; if anything fails on the way, its objects are
        removed and nothing is recorded. A rejected file's raw bytes are deleted at once: the
        report names each bad line, and a rejected dataset holds no storage (see ``quota_left``).
        """
        try:
            report = process_dataset(self.rt.bucket, raw, processed)
            if not report.ok:
                self.rt.bucket.delete(raw)
            self.app.upload_dataset(
                dataset_id=dataset_id,
                filename=filename,
                size_bytes=size,
                sha256=sha256,
                at=self.rt.clock(),
                report=report,
            )
        except BaseException:
            self._delete_files(dataset_id)
            raise
        self.committed()
        return msgspec.structs.replace(self.get(dataset_id), error_count=report.error_count)

    def delete(self, dataset_id: str) -> schemas.Deleted:
        """Record the deletion (409 while an active job, paused too, trains or validates on it), then remove
        its files."""
        self.get(dataset_id)
        active = JobService(self.rt, self.user_id).active_job_ids(dataset_id=dataset_id)
        self.app.delete_dataset(dataset_id, active_job_ids=active, at=self.rt.clock())
        self.committed()
        self._delete_files(dataset_id)
        return schemas.Deleted(id=dataset_id)

    def _delete_files(self, dataset_id: str) -> None:
        for prefix in (
            layout.dataset_raw_prefix(self.user_id, dataset_id),
            layout.dataset_processed_prefix(self.user_id, dataset_id),
        ):
            self.rt.bucket.delete_prefix(prefix)
