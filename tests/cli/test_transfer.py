"""Dataset upload and model download: streamed bytes, progress, checksums, local file errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from cli.weights import VERIFIED_MARK
from tests.cli.fake_api import FakeApi, Reply

LINE = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WEIGHTS = {"weights/adapter_config.json": b'{"r": 8}', "weights/adapter_model.safetensors": b"\0" * 4096}
ARCHIVE = _tar(WEIGHTS)


@pytest.fixture
def shown(logged_in: FakeApi) -> FakeApi:
    """``model show`` of m_1 reports the archive's digest, as the server does."""
    meta = {"model_id": "m_1", "status": "ready", "sha256": hashlib.sha256(ARCHIVE).hexdigest()}
    logged_in.route("GET", "/models/m_1", Reply.json(meta))
    return logged_in


def _download_route(body: bytes, sha: str | None, *, chunks: int = 3) -> Reply:
    headers = {"Content-Type": "application/x-tar", "X-Content-Size": str(len(ARCHIVE))}
    if sha:
        headers["X-Content-SHA256"] = sha
    step = max(1, len(body) // chunks)
    return Reply(200, iter([body[i : i + step] for i in range(0, len(body), step)]), headers)


def test_upload_streams_the_file(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    data = (LINE * 5000).encode()  # ~500 kB: several chunks
    (cli_env / "train.jsonl").write_bytes(data)
    logged_in.route(
        "POST",
        "/datasets/u_1/upload",
        Reply.json({"dataset_id": "ds_9", "status": "validated", "rows": 5000}),
    )
    result = run_cli("dataset", "upload", "--file", "train.jsonl")
    assert result.code == 0, result.err
    req = logged_in.last("POST", "/datasets/u_1/upload")
    assert req.body == data
    assert req.query == {"filename": "train.jsonl"}
    assert req.headers["content-length"] == str(len(data))
    assert req.headers["authorization"] == "Bearer tok-123"
    assert "ds_9" in result.out and "5000 rows" in result.out


def test_rejected_upload_exits_1_with_line_errors(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    (cli_env / "bad.jsonl").write_text("not json\n")
    logged_in.route(
        "POST",
        "/datasets/u_1/upload",
        Reply.json(
            {"dataset_id": "ds_x", "status": "rejected", "errors": [{"line": 1, "message": "not valid JSON"}]}
        ),
    )
    result = run_cli("dataset", "upload", "--file", "bad.jsonl")
    assert result.code == 1
    assert "line 1: not valid JSON" in result.out


def test_upload_too_large_shows_server_message(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    (cli_env / "big.jsonl").write_text(LINE)
    logged_in.route("POST", "/datasets/u_1/upload", Reply.error(413, "too_large", "dataset over 1 MiB quota"))
    result = run_cli("dataset", "upload", "--file", "big.jsonl")
    assert result.code == 1
    assert result.err.strip().endswith("dataset over 1 MiB quota (too_large HTTP 413)")


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.jsonl", None, "no such file"),
        ("folder", "dir", "not a regular file"),
        ("empty.jsonl", "empty", "file is empty"),
    ],
)
def test_bad_local_file_never_reaches_the_server(
    logged_in: FakeApi, run_cli, cli_env: Path, name: str, make: str | None, message: str
) -> None:
    if make == "dir":
        (cli_env / name).mkdir()
    elif make == "empty":
        (cli_env / name).write_bytes(b"")
    result = run_cli("dataset", "upload", "--file", name)
    assert result.code == 1
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert not [r for r in logged_in.requests if "upload" in r.path]


def test_dataset_list_show_delete(logged_in: FakeApi, run_cli) -> None:
    rows = [{"dataset_id": "ds_1", "filename": "a.jsonl", "rows": 3, "size_bytes": 2048}]
    logged_in.route("GET", "/datasets/u_1/list", Reply.json({"datasets": rows}))
    logged_in.route("GET", "/datasets/ds_1", Reply.json(rows[0]))
    logged_in.route("DELETE", "/datasets/ds_1", Reply(204))
    listed = json.loads(run_cli("dataset", "list", "--json").out)
    assert [{k: r[k] for k in rows[0]} for r in listed] == rows
    assert "2.0 KiB" in run_cli("dataset", "list").out
    assert "a.jsonl" in run_cli("dataset", "show", "--dataset-id", "ds_1").out
    result = run_cli("dataset", "delete", "--dataset-id", "ds_1")
    assert result.code == 0 and "deleted ds_1" in result.out


def test_download_verifies_and_unpacks(shown: FakeApi, run_cli, cli_env: Path) -> None:
    logged_in = shown
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    logged_in.route("GET", "/models/m_1/download", lambda _r: _download_route(ARCHIVE, sha))
    result = run_cli("model", "download", "--model-id", "m_1")
    assert result.code == 0, result.err
    dest = cli_env / "m_1"
    for name, data in WEIGHTS.items():
        assert (dest / name).read_bytes() == data
    assert (dest / VERIFIED_MARK).read_text().strip() == sha
    assert sorted(p.name for p in cli_env.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_download_archive_keeps_the_tar(shown: FakeApi, run_cli, cli_env: Path) -> None:
    logged_in = shown
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    logged_in.route("GET", "/models/m_1/download", lambda _r: _download_route(ARCHIVE, f"sha256={sha}"))
    result = run_cli("model", "download", "--model-id", "m_1", "--archive", "--output", "out.tar")
    assert result.code == 0, result.err
    assert (cli_env / "out.tar").read_bytes() == ARCHIVE
    assert sha in result.out
    again = run_cli("model", "download", "--model-id", "m_1", "--archive", "--output", "out.tar")
    assert again.code == 1 and "already exists" in again.err


@pytest.mark.parametrize(
    ("body", "sha", "message"),
    [
        (ARCHIVE[:-10] + b"corrupted!", hashlib.sha256(ARCHIVE).hexdigest(), "sha256 mismatch"),
        (ARCHIVE[:1000], hashlib.sha256(ARCHIVE).hexdigest(), "cut short"),
        (ARCHIVE, None, "no sha256"),
    ],
)
def test_download_refuses_unverified_weights(
    shown: FakeApi, run_cli, cli_env: Path, body: bytes, sha: str | None, message: str
) -> None:
    logged_in = shown
    logged_in.route("GET", "/models/m_1/download", lambda _r: _download_route(body, sha))
    result = run_cli("model", "download", "--model-id", "m_1")
    assert result.code == 1
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert [p.name for p in cli_env.iterdir() if p.name not in ("config", "cache")] == []


def test_download_checks_model_shows_digest(logged_in: FakeApi, run_cli, cli_env: Path) -> None:
    """A download whose header matches its body but not what ``model show`` said is refused."""
    logged_in.route("GET", "/models/m_1", Reply.json({"model_id": "m_1", "sha256": "f" * 64}))
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    logged_in.route("GET", "/models/m_1/download", lambda _r: _download_route(ARCHIVE, sha))
    result = run_cli("model", "download", "--model-id", "m_1")
    assert result.code == 1 and "`model show` says" in result.err
    with_base = run_cli("model", "download", "--model-id", "m_1", "--with-base", "--output", "wb")
    assert with_base.code == 0, with_base.err  # another archive: its own header is what counts
    assert logged_in.last("GET", "/models/m_1/download").query == {"with_base": "true"}


def test_model_list_show_delete(logged_in: FakeApi, run_cli) -> None:
    rows = [{"model_id": "m_1", "base_model": "smollm2-135m", "kind": "lora", "size_bytes": 1 << 20}]
    logged_in.route("GET", "/models/u_1/list", Reply.json({"models": rows}))
    logged_in.route("GET", "/models/m_1", Reply.json(rows[0]))
    logged_in.route("DELETE", "/models/m_1", Reply(204))
    listed = json.loads(run_cli("model", "list", "--json").out)
    assert [{k: r[k] for k in rows[0]} for r in listed] == rows
    out = run_cli("model", "list").out
    assert "m_1" in out and "1.0 MiB" in out
    assert "smollm2-135m" in run_cli("model", "show", "--model-id", "m_1").out
    assert run_cli("model", "delete", "--model-id", "m_1").out.strip() == "deleted m_1"
    logged_in.route("DELETE", "/models/m_2", Reply.error(404, "not_found", "no such model", "model_id"))
    missing = run_cli("model", "delete", "--model-id", "m_2")
    assert missing.code == 1 and "no such model (where: model_id" in missing.err


def test_client_reports_progress_per_chunk(logged_in: FakeApi, cli_env: Path) -> None:
    from cli.client import CHUNK, ApiClient

    data = b"x" * (CHUNK * 2 + 123)
    (cli_env / "big.bin").write_bytes(data)
    logged_in.route("POST", "/up", Reply.json({"ok": True}))
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    logged_in.route("GET", "/down", lambda _r: _download_route(ARCHIVE, sha))
    sent: list[int] = []
    received: list[int] = []
    totals: list[int | None] = []
    with ApiClient(logged_in.url, "tok") as client:
        assert client.upload("/up", cli_env / "big.bin", on_progress=sent.append) == {"ok": True}
        got = client.download("/down", io.BytesIO(), on_start=totals.append, on_progress=received.append)
    assert sent == [CHUNK, CHUNK, 123]
    assert sum(received) == len(ARCHIVE) and totals == [len(ARCHIVE)]
    assert (got.sha256, got.expected_sha256, got.size) == (sha, sha, len(ARCHIVE))


def test_progress_bar_on_a_terminal(logged_in: FakeApi, run_cli, cli_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    (cli_env / "train.jsonl").write_text(LINE * 100)
    logged_in.route("POST", "/datasets/u_1/upload", Reply.json({"dataset_id": "ds_9"}))
    result = run_cli("dataset", "upload", "--file", "train.jsonl")
    assert result.code == 0
    kb = f"{len(LINE) * 100 / 1000:.1f}"
    assert "upload train.jsonl" in result.err and f"{kb}/{kb} kB" in result.err
