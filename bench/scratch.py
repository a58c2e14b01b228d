"""Where the benches keep their buckets: ``$BENCH_DIR``, default ``~/.cache/tune-bench``.

On these machines the cost of creating a file depends on the folder, not only
the disk: create + link + unlink of a 500-byte file (what a commit does) measured
41-45 microseconds under ``~/.cache`` and ``/root``, but 555-800 under
``/work/main/.cache`` and under fresh folders in ``/tmp`` (same ext4 disk, same
run). A bench in such a folder measures the folder, not the store; the default
lies in the home folder, beside the platform's default bucket (``~/.tune``).
Every store in one bench run uses the same folder, so the ratios stay fair.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["scratch_dir"]


def scratch_dir(prefix: str = "bench-") -> tempfile.TemporaryDirectory[str]:
    """A temporary folder under ``$BENCH_DIR`` (made if missing), removed when the ``with`` ends."""
    base = Path(os.environ.get("BENCH_DIR") or Path.home() / ".cache" / "tune-bench")
    base.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)
