"""Where the benches keep their buckets: ``$BENCH_DIR``, default ``~/.cache/tune-bench``.

On these machines the cost of creating a file swings: create + link + unlink of a
500-byte file (what a commit does) measured 18-50 microseconds in some minutes and
550-1,000 in others, in ``~/.cache``, ``/root``, ``/tmp`` and ``/work`` alike (one
ext4 disk; a fresh folder is often slow for its first few hundred files). Figures
that write files move with it: ``file_create_us`` measures it, and benches that
depend on it print it beside their figures. Every store in one bench run uses the
same folder, so ratios stay fair; absolute rates are best read with that figure
(or with ``BENCH_DIR=/dev/shm/...``, which takes the disk out)."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

__all__ = ["file_create_us", "scratch_dir"]


def scratch_dir(prefix: str = "bench-") -> tempfile.TemporaryDirectory[str]:
    """A temporary folder under ``$BENCH_DIR`` (made if missing), removed when the ``with`` ends."""
    base = Path(os.environ.get("BENCH_DIR") or Path.home() / ".cache" / "tune-bench")
    base.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)


def file_create_us(folder: str | os.PathLike[str], n: int = 300) -> float:
    """Microseconds to create, link and unlink a 500-byte file in a fresh subfolder of ``folder``
    (a commit's file work), now: print it beside figures that write files, to read them by."""
    with tempfile.TemporaryDirectory(dir=folder) as where:
        start = time.perf_counter()
        for i in range(n):
            path = os.path.join(where, secrets.token_hex(8))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x" * 500)
            os.link(path, os.path.join(where, f"c{i}"))
            os.close(fd)
            os.unlink(path)
        return (time.perf_counter() - start) / n * 1e6
