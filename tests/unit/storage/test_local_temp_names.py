"""The local bucket's temp files (written, then linked or renamed into place) are named by the process
(its pid and a random part, renewed in a forked child) and a number, not by a random token asked of the
kernel per write; a name already taken (a dead process's) is skipped."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from pathlib import Path

import pytest

from storage import LocalBucket, local


def test_a_temp_file_left_under_the_next_temp_name_does_not_fail_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    monkeypatch.setattr(local._Process, "tmp_numbers", itertools.count(7))
    for number in (7, 8):  # as a dead process of the same pid and prefix left them
        (tmp_path / f"bucket/.bucket/tmp/{local._Process.tmp_prefix}{number}").write_bytes(b"stale")

    bucket.create("p/a", b"a")

    assert bucket.read("p/a") == b"a"
    assert next(local._Process.tmp_numbers) == 10


def test_a_forked_child_names_its_temp_files_apart_from_its_parent() -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child_pid, child_prefix = pool.apply(_process_names)

    assert child_pid != os.getpid() and child_pid == int(child_prefix.split("-")[0])
    assert child_prefix != local._Process.tmp_prefix


def _process_names() -> tuple[int, str]:
    return local._Process.pid, local._Process.tmp_prefix
