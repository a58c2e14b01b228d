"""A local log file mirrored whole to a bucket object (objects are whole writes, never appends).

The file starts as a copy of the object, so every attempt of a job appends to one log.
Anything may append to the local file (this process, or a child writing to an inherited
descriptor opened with ``O_APPEND``); ``sync`` uploads the whole file when it has grown.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from storage import Bucket, ObjectNotFound

__all__ = ["MirroredFile"]


class MirroredFile:
    """``path`` on this machine, uploaded to object ``name`` by ``sync``; thread-safe."""

    def __init__(self, bucket: Bucket, name: str, path: Path) -> None:
        self.bucket = bucket
        self.name = name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with open(self.path, "wb") as dst:
            try:
                with bucket.open_read(name) as src:
                    shutil.copyfileobj(src, dst)
            except ObjectNotFound:
                pass
        self._synced = self.path.stat().st_size

    def append(self, data: bytes) -> None:
        with self._lock, open(self.path, "ab") as fh:
            fh.write(data)

    def append_line(self, text: str) -> None:
        self.append(text.rstrip("\n").encode() + b"\n")

    def sync(self) -> bool:
        """Upload the file if it grew since the last upload; return whether it did."""
        with self._lock:
            size = self.path.stat().st_size
            if size == self._synced:
                return False
            with open(self.path, "rb") as fh:
                self.bucket.upload(self.name, fh)
            self._synced = size
            return True
