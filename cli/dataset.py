"""``dataset``: upload training data (JSONL), list, show and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from cli.context import Ctx, JsonFlag, build_app, main_for
from cli.errors import CliError

__all__ = ["app", "main"]

app = build_app("dataset", "Upload and manage training datasets (chat-format JSONL).")

_COLUMNS = ("dataset_id", "filename", "state", "status", "format", "rows", "size_bytes", "created_at")


def _check_file(path: Path) -> int:
    """The size of a readable, non-empty regular file; CliError otherwise."""
    if not path.exists():
        raise CliError(f"no such file: {path}", where="--file")
    if not path.is_file():
        raise CliError(f"not a regular file: {path}", where="--file")
    size = path.stat().st_size
    if size == 0:
        raise CliError(f"file is empty: {path}", where="--file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", where="--file") from exc
    return size


def _state(ds: dict[str, Any]) -> str:
    return str(ds.get("state") or ds.get("status") or "uploaded")


@app.command(name="list")
def list_datasets(*, json: JsonFlag = False, ctx: Ctx) -> None:
    """List your datasets."""
    from cli.output import Column, print_json, print_table, rows_of

    rows = rows_of(ctx.client.get(f"/datasets/{ctx.user_id}/list"), "datasets")
    print_json(rows) if json else print_table(rows, [Column(k) for k in _COLUMNS], empty="no datasets")


@app.command
def upload(
    *,
    file: Annotated[Path, Parameter(help="A JSONL file of chat conversations.")],
    json: JsonFlag = False,
    ctx: Ctx,
) -> int:
    """Upload a dataset file (streamed, with a progress bar); exit 1 if the server rejects it."""
    from cli.output import print_json, transfer_progress

    size = _check_file(file)
    path = f"/datasets/{ctx.user_id}/upload"
    with transfer_progress(f"upload {file.name}", size) as bar:
        reply = ctx.client.upload(path, file, params={"filename": file.name}, on_progress=bar.advance)
    if json:
        print_json(reply)
    else:
        rows = f", {reply['rows']} rows" if reply.get("rows") is not None else ""
        print(f"uploaded {reply.get('dataset_id')} ({_state(reply)}{rows})")
        for err in (reply.get("errors") or [])[:20]:
            where = f"line {err.get('line')}: " if isinstance(err, dict) and err.get("line") else ""
            print(f"  {where}{err.get('message') if isinstance(err, dict) else err}")
    return 1 if _state(reply) == "rejected" else 0


@app.command
def show(*, dataset_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """Show one dataset: size, format, rows, validation results."""
    from cli.output import print_document, print_json

    reply = ctx.client.get(f"/datasets/{dataset_id}")
    print_json(reply) if json else print_document(reply, title=dataset_id)


@app.command
def delete(*, dataset_id: str, ctx: Ctx) -> None:
    """Delete a dataset."""
    ctx.client.delete(f"/datasets/{dataset_id}")
    print(f"deleted {dataset_id}")


def main(tokens: list[str] | None = None) -> None:
    """Console script ``dataset``."""
    main_for(app, "dataset", tokens)
