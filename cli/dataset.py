"""``dataset``: upload training data (JSONL), list, show and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter
from msgspec import to_builtins

from cli.context import Ctx, JsonFlag, build_app, console_script
from cli.errors import CliError
from cli.pages import AfterFlag, AllFlag, LimitFlag

__all__ = ["app", "main"]

app = build_app("dataset", "Upload and manage training datasets (chat-format JSONL).")

_COLUMNS = ("dataset_id", "filename", "status", "format", "rows", "size_bytes", "created_at")


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


@app.command(name="list")
def list_datasets(
    *,
    limit: LimitFlag = 20,
    every: AllFlag = False,
    after: AfterFlag = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """List your datasets, newest first: the latest --limit, or --all."""
    from api.schemas import DatasetList
    from cli.pages import show_rows

    path = f"/datasets/{ctx.user_id}/list"
    show_rows(ctx.client, path, DatasetList, "datasets", _COLUMNS, limit=limit, every=every, after=after,
              json=json)


@app.command
def upload(
    *,
    file: Annotated[Path, Parameter(help="A JSONL file of chat conversations.")],
    json: JsonFlag = False,
    ctx: Ctx,
) -> int:
    """Upload a dataset file (streamed, with a progress bar); exit 1 if the server rejects it."""
    from api.schemas import Dataset
    from cli.output import print_json, transfer_progress

    size = _check_file(file)
    path = f"/datasets/{ctx.user_id}/upload"
    with transfer_progress(f"upload {file.name}", size) as bar:
        reply = ctx.client.upload(
            path, file, params={"filename": file.name}, on_progress=bar.advance, type=Dataset
        )
    if json:
        print_json(reply)
    else:
        rows = f", {reply.rows} rows" if reply.rows is not None else ""
        fmt = f", {reply.format}" if reply.format else ""
        print(f"uploaded {reply.dataset_id} ({reply.status or 'uploaded'}{fmt}{rows})")
        _print_line_errors(reply)
    return 1 if reply.status == "rejected" else 0


def _print_line_errors(ds: Any, limit: int = 20) -> None:
    for err in ds.errors[:limit]:
        print(f"  line {err.line}: {err.message}" if err.line else f"  {err.message}")
    more = (ds.error_count or len(ds.errors)) - min(limit, len(ds.errors))
    if more > 0:
        print(f"  ... and {more} more")


@app.command
def show(*, dataset_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """Show one dataset: size, format, rows, validation results."""
    from api.schemas import Dataset
    from cli.output import print_json, print_record

    reply = ctx.client.get(f"/datasets/{dataset_id}", type=Dataset)
    if json:
        print_json(reply)
        return
    fields = {k: v for k, v in to_builtins(reply).items() if k not in ("errors", "stats", "position")}
    print_record(fields, title=dataset_id)
    if reply.stats:
        print_record(reply.stats, title="stats")
    _print_line_errors(reply)


@app.command
def delete(*, dataset_id: str, ctx: Ctx) -> None:
    """Delete a dataset."""
    from api.schemas import Deleted

    ctx.client.delete(f"/datasets/{dataset_id}", type=Deleted)
    print(f"deleted {dataset_id}")


main = console_script(app, "dataset")
