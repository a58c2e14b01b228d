"""Printing: rich tables and key/value panels for people, JSON for scripts.

Values are formatted by their key's suffix, so every command shows money,
durations and sizes the same way: ``*_usd_micros`` as dollars (exact),
``*_ms`` as a duration, ``*_bytes`` as a size. ``--json`` prints the API's
values unchanged (integers stay integers).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Column",
    "bytes_text",
    "duration_text",
    "format_value",
    "print_document",
    "print_json",
    "print_record",
    "print_table",
    "report_format",
    "rows_of",
    "stderr_console",
    "stdout_console",
    "to_plain",
    "transfer_progress",
    "usd",
]


def stdout_console() -> Any:
    """Rich on stdout; off a terminal (pipes, files) tables get 200 columns rather than 80."""
    import os

    from rich.console import Console

    console = Console(file=sys.stdout, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


def _table_console() -> Any:
    """A console that prints tables at their natural width: a narrow terminal wraps lines, never cells."""
    console = stdout_console()
    console.width = max(console.width, 400)
    return console


def stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


def to_plain(value: Any) -> Any:
    """Structs, datetimes and friends as JSON-ready builtins."""
    import msgspec

    return msgspec.to_builtins(value)


def usd(micros: int | None) -> str:
    """Exact dollars from integer micro-dollars: 1_234_500 -> "$1.2345", 0 -> "$0.00", None -> "-"."""
    from domain.money import format_usd

    return "-" if micros is None else format_usd(int(micros), grouping=False)


def duration_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds, millis = divmod(int(ms), 1000)
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}.{millis:03d}s"


def bytes_text(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


def format_value(key: str, value: Any) -> str:
    """One cell: by key suffix for numbers, compact JSON for nested values, '-' for missing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if key.endswith(("_usd_micros", "usd_micros_per_hour")) or key == "usd_micros":
            return usd(value)
        if key.endswith("_ms"):
            return duration_text(value)
        if key.endswith("_bytes"):
            return bytes_text(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(map(str, value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, str) and _TIMESTAMP.match(value):
        return f"{value[:10]} {value[11:19]}Z"  # UTC to the second
    return str(value)


def report_format(format: str, json: bool) -> str:
    """The format of a report command: ``--json`` is ``--format json`` (every listing takes ``--json``).

    ``--json`` with ``--format csv`` is a contradiction, refused rather than guessed.
    """
    from cli.errors import CliError

    if not json:
        return format
    if format not in ("table", "json"):
        raise CliError(f"--json and --format {format} ask for two formats; pass one", where="--json")
    return "json"


class Column:
    """A table column: the header and the key it shows."""

    __slots__ = ("header", "key")

    def __init__(self, key: str, header: str | None = None) -> None:
        self.key = key
        self.header = header or _label(key).removesuffix("_ms").removesuffix("_bytes").replace("_", " ")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_plain(data), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def print_table(
    rows: Iterable[Any],
    columns: Sequence[Column] | None = None,
    *,
    title: str | None = None,
    empty: str = "nothing yet",
) -> None:
    """A rich table with one row per item; ``empty`` when there are none.

    Columns no row has are left out; without ``columns`` every key is shown.
    """
    from rich import box
    from rich.table import Table

    items = [_for_display(to_plain(r)) for r in rows]
    console = _table_console()
    if not items:
        if empty:
            console.print(f"[dim]{empty}[/dim]", highlight=False)
        return
    present = {k for item in items if isinstance(item, dict) for k in item}
    if columns is None:
        columns = [Column(k) for k in dict.fromkeys(k for item in items for k in item)]
    columns = [c for c in columns if c.key in present] or [Column(k) for k in sorted(present)]
    table = Table(
        title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, title_justify="left"
    )
    for col in columns:
        table.add_column(col.header, no_wrap=True)
    for item in items:
        table.add_row(*(format_value(c.key, item.get(c.key)) for c in columns))
    console.print(table)


def _for_display(data: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values, log positions, and the decimal twin of every exact ``*_usd_micros`` amount."""
    shown = {}
    for key, value in data.items():
        if value is None or value == "" or value == [] or value == {} or key == "position":
            continue
        if f"{key}_usd_micros" in data or (key == "cost_per_hour" and "usd_micros_per_hour" in data):
            continue
        shown[key] = value
    return shown


def _label(key: str) -> str:
    return key.replace("usd_micros_per_hour", "per_hour").removesuffix("_usd_micros")


def print_record(record: Any, *, title: str | None = None) -> None:
    """Key/value lines for one object's non-empty scalar fields."""
    from rich.table import Table

    data = _for_display(to_plain(record))
    table = Table(title=title, show_header=False, box=None, pad_edge=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        table.add_row(_label(key), format_value(key, value))
    stdout_console().print(table)


def rows_of(reply: Any, key: str) -> list[Any]:
    """The list in a listing reply, whether it is bare or wrapped as ``{key: [...]}``."""
    data = to_plain(reply)
    if isinstance(data, dict):
        data = data.get(key, [])
    return list(data or [])


def print_document(data: Any, *, title: str | None = None) -> None:
    """Any reply: scalars as key/value lines, nested objects below, lists and maps of objects as tables."""
    data = to_plain(data)
    if isinstance(data, list):
        print_table(data, title=title)
        return
    if not isinstance(data, dict):
        stdout_console().print(format_value("", data), highlight=False)
        return
    data = _for_display(data)
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if scalars:
        print_record(scalars, title=title)
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            print_table(value, title=key)
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            print_table([{"name": k, **v} for k, v in value.items()], title=key)
        elif isinstance(value, dict):
            print_document(value, title=key)
        elif isinstance(value, list):
            print_record({key: value})


class transfer_progress:
    """A rich progress bar on stderr for an upload or download; call ``advance(n)`` per chunk."""

    def __init__(self, description: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = stderr_console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,  # no bar in logs and pipes
        )
        self._task = self._progress.add_task(description, total=total)

    def set_total(self, total: int | None) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def __enter__(self) -> transfer_progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
