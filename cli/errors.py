"""The CLI's one error type and the one place that turns failures into exit codes.

::

    CliError          anything the user should read: an API error (status, code, message,
                      where), an unreachable server, a bad local file, a checksum mismatch

``run(app, tokens)`` calls a cyclopts app and converts every expected failure
into a single line on stderr and a non-zero exit status, never a traceback:

| failure                               | exit |
|---------------------------------------|------|
| CliError (API 4xx/5xx, local problem) | 1    |
| bad command line (cyclopts)           | 2    |
| Ctrl-C                                | 130  |
| OSError from a local file             | 1    |
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "format_error", "run"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to show the user as one line."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        where: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.where = where
        self.status = status

    def __str__(self) -> str:
        return format_error(self)


def format_error(err: CliError) -> str:
    """``message (where: X; code, HTTP N)`` on one line."""
    details = []
    if err.where:
        details.append(f"where: {err.where}")
    tag = " ".join(p for p in (err.code, f"HTTP {err.status}" if err.status else None) if p)
    if tag:
        details.append(tag)
    text = err.message if not details else f"{err.message} ({'; '.join(details)})"
    return " ".join(text.split())  # one line, whatever the server sent


def _print_error(prog: str, text: str) -> None:
    sys.stderr.write(f"{prog}: error: {' '.join(text.split())}\n")
    sys.stderr.flush()


def _is_event_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the event store's (eventsourcing's PersistenceError: a broken chain, a bucket
    it cannot reach) in an operator command; checked without importing the store (``tune --help``
    stays fast): an error of it means it was imported."""
    persistence = sys.modules.get("eventsourcing.persistence")
    return persistence is not None and isinstance(exc, persistence.PersistenceError)


def run(app: Any, tokens: Iterable[str] | None = None, *, prog: str = "tune") -> int:
    """Run ``app`` (a cyclopts App, usually ``app.meta``) and return its exit status."""
    from cyclopts import CycloptsError

    try:
        result = app(
            list(sys.argv[1:] if tokens is None else tokens),
            print_error=False,
            exit_on_error=False,
            result_action="return_value",
        )
    except CliError as exc:
        _print_error(prog, str(exc))
        return EXIT_ERROR
    except CycloptsError as exc:
        _print_error(prog, f"{exc} (see `{prog} --help`)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _print_error(prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tune list | head`
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _print_error(prog, f"{where}{exc.strerror or exc}")
        return EXIT_ERROR
    except Exception as exc:
        if not _is_event_store_error(exc):
            raise
        _print_error(prog, str(exc) or type(exc).__name__)  # e.g. a broken chain, with what to run
        return EXIT_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
