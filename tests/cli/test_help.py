"""``--help`` is fast and light: no torch, transformers, httpx or server code imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "httpx", "api", "domain", "storage", "runners", "projections")

PROBE = """
import sys
from cli.{module} import main
try:
    main({args!r})
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
assert not heavy, heavy
print("OK")
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("tune", ["--help"]),
        ("tune", ["start", "--help"]),
        ("tune", ["billing", "--help"]),
        ("tune", ["billing", "report", "--help"]),
        ("tune", ["budget", "set", "--help"]),
        ("tune", ["serve", "--help"]),
        ("tune", ["admin", "--help"]),
        ("tune", ["key", "create", "--help"]),
        ("model", ["--help"]),
        ("model", ["chat", "--help"]),
        ("dataset", ["--help"]),
        ("dataset", ["upload", "--help"]),
    ],
)
def test_help_imports_nothing_heavy(module: str, args: list[str]) -> None:
    code = PROBE.format(module=module, args=args, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("OK")
    assert "Usage:" in proc.stdout


def test_tune_help_lists_the_seed_commands(run_cli) -> None:
    result = run_cli("tune", "--help")
    assert result.code == 0
    for command in ("start", "list", "status", "stop", "logs", "cost", "billing", "login", "serve", "admin"):
        assert f" {command} " in result.out, command


def test_model_and_dataset_help(run_cli) -> None:
    model = run_cli("model", "--help").out
    dataset = run_cli("dataset", "--help").out
    for command in ("list", "download", "chat", "delete"):
        assert f" {command} " in model
    for command in ("list", "upload", "show", "delete"):
        assert f" {command} " in dataset


def test_console_scripts_are_installed() -> None:
    bindir = Path(sys.executable).parent
    for name in ("tune", "model", "dataset"):
        script = bindir / name
        if not script.exists():
            pytest.skip(f"{name} console script not installed (pip install -e .)")
        proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"Usage: {name}" in proc.stdout


# Commands that print no listing or record (they act, stream text or chat): no --json to take.
NO_JSON = {
    "tune login", "tune logout", "tune logs", "tune serve", "tune stop", "tune pause",
    "tune resume", "tune budget clear",
    "model download", "model chat", "model delete", "dataset delete", "tune key revoke",
    "tune run api", "tune run projector", "tune run ledger", "tune run dispatcher",
}  # fmt: skip


def _commands(app, path: tuple[str, ...]):
    for name in app:
        if name.startswith("-"):
            continue
        sub = app[name]
        if sub.default_command is not None:
            yield " ".join((*path, name)), sub.default_command
        yield from _commands(sub, (*path, name))


def test_every_listing_takes_json() -> None:
    """The README: "Every listing takes --json" (``tune billing report`` once did not)."""
    import inspect

    from cli import dataset, model, tune

    commands = {
        name: fn for mod in (tune, model, dataset) for name, fn in _commands(mod.app, (mod.app.name[0],))
    }
    assert "tune billing report" in commands and "tune admin report" in commands
    without = {name for name, fn in commands.items() if "json" not in inspect.signature(fn).parameters}
    assert without == NO_JSON
