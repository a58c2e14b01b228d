"""docs/deploy.md names only what exists: each ``tune run <role>`` command, each ``-m <module>`` and
each ``TUNE_*`` variable (read by ``runtime.settings`` or a role)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()


def test_every_role_command_it_names_exists() -> None:
    from cli.run import run_app

    roles = set(re.findall(r"tune run (\w+)", DOC))
    assert roles == {"api", "projector", "ledger", "dispatcher"}
    for role in roles:
        assert role in run_app, role


def test_every_module_it_names_exists() -> None:
    modules = set(re.findall(r"-m ([\w.]+)", DOC))
    assert {"runners.job_runner", "runners.backends.ray_entry"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_every_variable_it_names_is_read_somewhere() -> None:
    sources = "\n".join(
        p.read_text() for d in ("runtime", "roles", "storage", "cli") for p in (ROOT / d).rglob("*.py")
    )
    for name in set(re.findall(r"\bTUNE_[A-Z_]+\b", DOC)):
        assert f'"{name}"' in sources, name
