"""The context every role of the platform is handed: one ``Runtime`` per process.

- ``settings``: read once by the entry point (``runtime.settings.Settings``);
- ``bucket``: the object store (``settings.bucket_url`` unless one is handed in);
- ``apps``, ``platform`` and ``user_app(user_id)``: the eventsourcing applications
  (one per partition, shared by everything in the process: ``storage.eventstore.PartitionApps``);
- ``projector`` and ``views``: the projector folds partitions it is told about into views,
  and feeds them to the ``ViewStore`` readers use;
- ``clock``: the only source of ``now`` (tests pass a fixed one);
- ``job_submitted``: callbacks ``(user_id, job_id)`` run after a job is
  submitted and projected (the dispatcher's seam; it may also watch views);
- ``serving``: the chat engine behind ``/v1/chat/completions`` (``runtime.serving.ChatEngine``),
  wired in by the role (``roles.embedded``: ``runners.serving.AdapterEngine``); None where the
  process serves no models;
- ``completion_served``: callbacks ``(user_id, model, completion)`` run after each chat completion
  (prompt and completion tokens, engine milliseconds): the seam metering hooks into;
- ``io(fn, ...)``: how async handlers run a read: inline on a local bucket
  (views are in memory or a small file away, cheaper than a thread hop), on a
  worker thread for a remote one (a network call must not block the loop).

Commits by other processes (the admin CLI, the ledger, runners, other API workers) reach this
process through its change feed (``settings.change_feed``, ``storage.changes``), started with
the projector. What it does with them is the role's choice (``fold_others``):

- fold them (the default: ``tune serve``, the one process that projects): each partition with
  live views here (``live_partitions``) that moved is caught up again, and a view another
  process wrote first is dropped from the cache (``Projector``);
- leave them to the projector role (``tune run api``, whose workers would otherwise each fold
  every commit of every partition they hold: measured with ``bench/bench_topology.py``, 20 users
  on 2 cores, that was half of each worker's time and made a view lag seconds behind its
  commit): the partition is ``release``d, so the views this process fed of it are checked
  against the bucket again on their next read and it reads the projector's (``ViewStore``).
  Its own commits it still folds (``committed``: read-your-writes), and no sweep refolds them.

Either way a suspension, a quota or a role change shows in every API process within the feed's
interval plus one fold (2 s at p99 is the promise; ``tests/e2e/test_roles.py``).

Writes go through ``committed(partition)``, which tells the projector and waits
(bounded) until the views reflect the write, so the response and the next read
show it. Workers in the same process (``roles.embedded``) share the applications
and tell ``projector.notify(partition)`` after their own writes.

The roles (``roles/``) build it; ``api.create_app`` and the workers only use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import msgspec

from domain.base_models import CATALOGUE, BaseModelSource, check_obtainable
from domain.errors import NotFound, ValidationFailed
from domain.user import DEFAULT_MAX_CONCURRENT_JOBS, DEFAULT_MAX_DATASET_BYTES
from projections.projector import Projector
from projections.store import ViewStore
from projections.users import Quota
from runtime.serving import ChatEngine, Completion
from runtime.settings import Settings
from storage import Bucket, ObjectNotFound, layout, open_bucket
from storage.changes import ChangeFeed, open_change_feed
from storage.clock import Clock, utc_now
from storage.eventstore.apps import PartitionApps
from storage.layout import PLATFORM

if TYPE_CHECKING:
    from domain.applications import PlatformApp, UserApp

__all__ = ["Quota", "Runtime"]

log = logging.getLogger("runtime")

T = TypeVar("T")
JobHook = Callable[[str, str], None]
ServedHook = Callable[[str, str, Completion], None]


class Runtime:
    """Everything a role of the platform works with, built once per process by its entry point."""

    def __init__(
        self,
        settings: Settings,
        *,
        bucket: Bucket | None = None,
        clock: Clock = utc_now,
        fold_others: bool = True,
        projector_workers: int = 1,
    ) -> None:
        """``fold_others``: fold the commits other processes make (False: release them, the module
        docstring); ``projector_workers``: partitions its projector folds at once (``Projector``)."""
        self.settings = settings
        self.fold_others = fold_others
        self.bucket = bucket if bucket is not None else open_bucket(settings.bucket_url)
        self.clock = clock
        self.apps = PartitionApps(self.bucket)
        self.views = ViewStore(self.bucket)
        self.projector = Projector(
            self.bucket,
            self.app,
            store=self.views,
            coalesce_s=settings.listing_interval_s,
            workers=projector_workers,
        )
        self.job_submitted: list[JobHook] = []
        self.serving: ChatEngine | None = None
        self.completion_served: list[ServedHook] = []
        self.inline_io = _is_local(self.bucket)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._feed: ChangeFeed | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, *, follow: bool = True) -> None:
        """Start the projector loop and (``follow``) the change feed over the live partitions
        (idempotent; a role following other partitions calls ``follow`` itself)."""
        if self._thread is None:
            self._stop.clear()
            sweep = 30.0 if self.fold_others else None
            self._thread = self.projector.start(self._stop, sweep_every=sweep)
            self.projector.notify(PLATFORM)
            if follow and self.settings.change_feed != "off":
                self.follow(self.change_feed(self.live_partitions))

    def change_feed(self, partitions: Callable[[], Iterable[str]], *, create: bool = False) -> ChangeFeed:
        """The feed ``settings.change_feed`` names, checking the heads of ``partitions()``."""
        url = self.settings.bucket_url
        prefix = url[len("gs://") :].partition("/")[2] if url.startswith("gs://") else ""
        return open_change_feed(
            self.settings.change_feed,
            partitions=partitions,
            head_of=self.projector.head,
            bucket_prefix=prefix,
            create=create,
        )

    def follow(self, feed: ChangeFeed, on_change: Callable[[str], None] | None = None) -> None:
        """Hand ``on_change`` (default: catch up the partition if it is live here) each partition
        ``feed`` tells of; the feed's thread is closed by ``stop``."""
        self._feed = feed
        feed.start(on_change or self._changed)

    def live_partitions(self) -> list[str]:
        """The partitions this process holds views of (the projector folded them here)."""
        return self.projector.partitions()

    def all_partitions(self) -> list[str]:
        """The platform's partition and every user's, by the platform's user view."""
        users = (self.view_json(layout.users()) or {}).get("users", ())
        return [PLATFORM, *(layout.user_partition(row["user_id"]) for row in users)]

    def _changed(self, partition: str) -> None:
        if not self.fold_others:
            self.projector.release(partition)
        elif partition in self.projector.partitions():
            self.projector.notify(partition)

    def stop(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None

    # -- applications ------------------------------------------------------------------------

    def app(self, partition: str) -> Any:
        """The Application of ``partition`` (shared by the whole process)."""
        return self.apps(partition)

    @property
    def platform(self) -> PlatformApp:
        return self.apps.platform()

    def user_app(self, user_id: str) -> UserApp:
        return self.apps.user(user_id)

    # -- writes and reads --------------------------------------------------------------------

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` from an async handler: inline for a local bucket, else on a worker thread."""
        if self.inline_io:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def committed(self, partition: str) -> None:
        """A command just saved to ``partition``: wait (bounded) until its views show it."""
        self.projector.notify(partition)
        if not self.projector.wait_for(partition, timeout=self.settings.projection_wait_s):
            log.warning(
                "views of %s did not catch up within %.1fs", partition, self.settings.projection_wait_s
            )

    def view(self, name: str, type: type[T], *, missing: str, where: str | None = None) -> T:
        """The view ``name`` decoded as ``type``; NotFound(``missing``) if it does not exist."""
        try:
            data, _ = self.views.read_raw(name)
        except ObjectNotFound:
            raise NotFound(missing, where=where) from None
        return msgspec.json.decode(data, type=type)

    def live_view(self, name: str, type: type[T], *, missing: str, where: str) -> T:
        """Like ``view``, but a deleted object (``status == "deleted"``) is NotFound too."""
        found = self.view(name, type, missing=missing, where=where)
        if getattr(found, "status", None) == "deleted":
            raise NotFound(missing, where=where)
        return found

    def view_or(self, name: str, type: type[T], default: T) -> T:
        """The view ``name`` decoded as ``type``, or ``default`` when it does not exist yet."""
        try:
            data, _ = self.views.read_raw(name)
        except ObjectNotFound:
            return default
        return msgspec.json.decode(data, type=type)

    def view_json(self, name: str) -> dict[str, Any] | None:
        """The view as a shared, read-only dict, or None."""
        try:
            return self.views.read_json(name)[0]
        except ObjectNotFound:
            return None

    # -- users -------------------------------------------------------------------------------

    def is_active(self, user_id: str) -> bool:
        """Whether the user exists and is not suspended, by the platform's user view.

        A login catches that view up first; a suspension written by another process
        shows here once the projector hears of it (its notification or sweep).
        """
        return self.accepts_token(user_id, None)

    def accepts_token(self, user_id: str, token_version: int | None) -> bool:
        """Whether a token of ``token_version`` still lets the user in: the user exists, is active,
        and has had no tokens revoked since it was issued (None: do not check the version).

        Read from the platform's user view, like ``is_active``; a token without a version is version 0.
        """
        try:
            info = self.view_json(layout.user_info(user_id))
        except ValidationFailed:
            return False
        if info is None or info.get("status", "active") != "active":
            return False
        return token_version is None or token_version >= info.get("token_version", 0)

    def quota(self, user_id: str) -> Quota:
        """The user's quotas (the platform's defaults until an operator sets them)."""
        info = self.view_json(layout.user_info(user_id)) or {}
        quota = info.get("quota") or {}
        return Quota(
            max_concurrent_jobs=quota.get("max_concurrent_jobs", DEFAULT_MAX_CONCURRENT_JOBS),
            max_dataset_bytes=quota.get("max_dataset_bytes", DEFAULT_MAX_DATASET_BYTES),
        )

    def base_model_names(self) -> set[str]:
        """Names users may fine-tune: the platform's catalogue, or the built-in one before it exists."""
        return set(self.base_model_sources())

    def base_model_sources(self) -> dict[str, BaseModelSource]:
        """Where each base model users may fine-tune comes from (the catalogue, or the built-in one)."""
        catalogue = self.view_json(layout.base_models())
        if catalogue is None:
            return dict(CATALOGUE)
        return {
            entry["name"]: BaseModelSource(entry["name"], entry["source_kind"], entry["source"])
            for entry in catalogue.get("base_models", ())
        }

    def check_base_model_obtainable(self, name: str) -> list[str]:
        """Whether jobs on base model ``name`` can get it: already converted in the bucket, or fetchable.

        Returns the warnings to show (a hub model's first download); raises ``BaseModelUnavailable``
        for a hub model not converted yet where ``HF_HUB_OFFLINE`` is set (the job could only fail).
        """
        source = self.base_model_sources().get(name)
        if source is None:
            return []
        converted = self.bucket.exists(layout.base_model_marker(name))
        return check_obtainable(source, converted=converted, hub_offline=self.settings.hub_offline)

    def notify_completion_served(self, user_id: str, model: str, completion: Completion) -> None:
        for hook in list(self.completion_served):
            try:
                hook(user_id, model, completion)
            except Exception:  # the answer was already given; a broken hook is logged, not raised
                log.exception("completion_served hook %r failed for %s", hook, user_id)

    def notify_job_submitted(self, user_id: str, job_id: str) -> None:
        for hook in list(self.job_submitted):
            try:
                hook(user_id, job_id)
            except Exception:  # a broken hook must not fail the request that already succeeded
                log.exception("job_submitted hook %r failed for %s", hook, job_id)


def _is_local(bucket: Bucket) -> bool:
    from storage.local import LocalBucket
    from storage.memory import MemoryBucket

    return isinstance(bucket, LocalBucket | MemoryBucket)
