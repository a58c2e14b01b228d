"""The local bucket is private: folders 0700, objects 0600 (whatever the umask), old 0644 files still read."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import LocalBucket
from storage.open import ensure_home


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual umask (022), so a mode that is private here is private because the code made it so."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every folder (name ending in "/") and file under ``root`` (itself included), with its mode."""
    found = {"./": stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(folder, name)
            found[f"{path.relative_to(root)}/"] = stat.S_IMODE(path.stat().st_mode)
        for name in files:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def not_private(root: Path) -> dict[str, str]:
    return {
        name: oct(mode)
        for name, mode in modes(root).items()
        if mode != (0o700 if name.endswith("/") else 0o600)
    }


def test_every_write_path_makes_private_folders_and_objects(tmp_path: Path) -> None:
    root = tmp_path / "new" / "deep" / "bucket"  # every missing level is made 0700
    bucket = LocalBucket(root)
    bucket.write("a/b/plain.json", b"{}")
    bucket.write("a/b/plain.json", b"{}", if_generation_match=bucket.stat("a/b/plain.json").generation)
    bucket.write("platform/events/000000000001.json", b"{}", if_generation_match=0)  # create-only (link)
    bucket.upload("users/u/data/d/raw/train.jsonl", io.BytesIO(b"x" * 3_000_000))
    bucket.upload("users/u/models/m/weights/w.bin", [b"ab", b"cd"])
    bucket.write("gone/soon.json", b"{}")
    bucket.delete("gone/soon.json")
    assert len(modes(root)) > 10
    assert not_private(root) == {}
    assert not_private(tmp_path / "new") == {}


def test_a_bucket_written_with_open_modes_is_read_and_rewritten_private(tmp_path: Path) -> None:
    """An older release left 0755 folders and 0644 files: reading works, a rewrite makes the object 0600."""
    root = tmp_path / "bucket"
    (root / "platform" / "events").mkdir(parents=True, mode=0o755)
    old = root / "platform" / "events" / "000000000001.json"
    old.write_bytes(b'{"old": true}')
    old.chmod(0o644)
    bucket = LocalBucket(root)
    assert bucket.read("platform/events/000000000001.json") == b'{"old": true}'
    assert list(bucket.list("platform/")) == ["platform/events/000000000001.json"]
    stat_ = bucket.stat("platform/events/000000000001.json")
    bucket.write("platform/events/000000000001.json", b"{}", if_generation_match=stat_.generation)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    bucket.write("platform/events/000000000002.json", b"{}", if_generation_match=0)
    assert stat.S_IMODE((root / "platform/events/000000000002.json").stat().st_mode) == 0o600


def test_ensure_home_makes_a_new_home_private_and_narrows_an_open_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = tmp_path / "a" / "home"
    assert ensure_home(fresh) == fresh
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with caplog.at_level("WARNING", logger="storage.open"):
        ensure_home(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert "narrowed to 0700" in caplog.text and str(shared) in caplog.text

