"""``PartitionApps``: the Application of each partition of one bucket, opened once and shared.

A process holds one per bucket: the API's requests, the projector, the dispatcher and the
ledger then share each partition's Application (and its aggregate cache), and a commit
one of them makes is seen by the others' next read. Least recently used Applications are
dropped past ``max_open`` (an Application holds no resource but memory).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from storage import layout
from storage.bucket import Bucket
from storage.eventstore.factory import open_platform, open_user

if TYPE_CHECKING:
    from domain.applications import PlatformApp, UserApp

__all__ = ["PartitionApps"]


class PartitionApps:
    """``apps(partition)`` -> its Application: ``"platform"`` or ``"users/<user_id>"``.

    Args:
        bucket: where every partition's events are.
        max_open: how many Applications to keep (least recently used ones are dropped).
        env: extra Application settings for every partition (e.g. ``AGGREGATE_CACHE_MAXSIZE``).
    """

    def __init__(self, bucket: Bucket, *, max_open: int = 1024, **env: str) -> None:
        self.bucket = bucket
        self.max_open = max_open
        self._env = env
        self._apps: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, partition: str) -> Any:
        with self._lock:
            app = self._apps.get(partition)
            if app is not None:
                self._apps.move_to_end(partition)
                return app
        app = self._open(partition)
        with self._lock:
            app = self._apps.setdefault(partition, app)
            while len(self._apps) > self.max_open:
                self._apps.popitem(last=False)
        return app

    def platform(self) -> PlatformApp:
        return self(layout.PLATFORM)  # type: ignore[no-any-return]

    def user(self, user_id: str) -> UserApp:
        return self(layout.user_partition(user_id))  # type: ignore[no-any-return]

    def _open(self, partition: str) -> Any:
        if partition == layout.PLATFORM:
            return open_platform(self.bucket, **self._env)
        return open_user(self.bucket, layout.user_of(partition), **self._env)
