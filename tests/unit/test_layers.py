"""The layers import downwards only (docs/CONTRACTS.md): a new arrow upwards fails here, naming the file.

::

    cli/                       clients over HTTP; imports server packages only inside operator commands
    roles/                     entry points: put a process together (tune serve, python -m roles.ledger)
    api/        runners/       side by side: neither imports the other
    runtime/                   the context every role is handed (Runtime) and its Settings
    projections/
    storage/                   (storage/layout.py: every object name in the bucket)
    domain/     views/         pure: the model and its rules; the shapes of the JSON views

Every import counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BELOW: dict[str, set[str]] = {
    "domain": set(),
    "views": set(),
    "storage": {"domain"},
    "projections": {"domain", "views", "storage"},
    "runtime": {"domain", "views", "storage", "projections"},
    "api": {"domain", "views", "storage", "projections", "runtime"},
    "runners": {"domain", "views", "storage", "projections", "runtime"},
    "roles": {"domain", "views", "storage", "projections", "runtime", "api", "runners"},
}
PACKAGES = {*BELOW, "cli"}


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(top-level package, line, at module level) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            yield name.split(".")[0], node.lineno, id(node) in module_level


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(BELOW))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in _files(package)
        for imported, line, _ in _imports(path)
        if imported in PACKAGES and imported != package and imported not in BELOW[package]
    ]
    assert not upward, "\n".join(upward)


def test_the_cli_imports_server_packages_only_inside_its_commands() -> None:
    eager = [
        f"{path.relative_to(ROOT)}:{line} imports {imported} at module level"
        for path in _files("cli")
        for imported, line, module_level in _imports(path)
        if module_level and imported in BELOW
    ]
    assert not eager, "\n".join(eager)  # `tune --help` must not load the server (bench/bench_cli.py)
