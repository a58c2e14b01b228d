"""docs/deploy.md names only what exists: each ``tune run <role>`` command, each ``-m <module>`` and
each ``TUNE_*`` variable (read by ``runtime.settings`` or a role)."""

from __future__ import annotations

import importlib
import importlib.util
import json
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


# -- deploy/: the images and the one-host compose file --------------------------------------------

DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))


def _command_options(role: str) -> set[str]:
    """The ``--options`` ``tune run <role>`` takes."""
    import inspect

    from cli.run import run_app

    function = run_app[role].default_command
    assert function is not None, role
    return {f"--{name.replace('_', '-')}" for name in inspect.signature(function).parameters}


def _check_tune_run(argv: list[str]) -> None:
    """``[role, --option, value, ...]`` is a ``tune run`` command line that exists."""
    role, *rest = argv
    options = _command_options(role)
    for word in rest:
        if word.startswith("--"):
            assert word.partition("=")[0] in options, (role, word)


def test_the_dockerfiles_copy_what_exists_and_run_what_exists() -> None:
    import tomllib

    assert {p.name for p in DOCKERFILES} == {"Dockerfile.service", "Dockerfile.runner"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        for sources in re.findall(r"^COPY (.+) \S+$", text, re.M):
            for source in sources.split():
                assert (ROOT / source).exists(), (dockerfile.name, source)
        for extras in re.findall(r'pip install [^\n]*"\.\[([\w,]+)\]"', text):
            for extra in extras.split(","):
                assert extra in project["optional-dependencies"], (dockerfile.name, extra)
        for module in re.findall(r"-m ([\w.]+)", text):
            assert importlib.util.find_spec(module) is not None, module
    service = (DEPLOY / "Dockerfile.service").read_text()
    assert 'ENTRYPOINT ["tune", "run"]' in service and "tune" in project["scripts"]
    _check_tune_run(json.loads(re.search(r"^CMD (.+)$", service, re.M)[1]))  # type: ignore[index]
    assert "ARG DEVICE=cpu" in (DEPLOY / "Dockerfile.runner").read_text()


def test_the_compose_file_runs_every_role_with_options_modules_and_variables_that_exist() -> None:
    import yaml

    from runtime.settings import LAUNCH_BACKENDS

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    roles = {}
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        if service.get("image") == "tune-service" and "entrypoint" not in service:
            _check_tune_run(service["command"])
            roles[service["command"][0]] = service
        if service.get("entrypoint") == ["python", "-c"]:
            script = service["command"][0]
            compile(script, name, "exec")
            for module, names in re.findall(r"^from ([\w.]+) import (.+)$", script, re.M):
                imported = importlib.import_module(module)
                for attribute in names.split(","):
                    attribute = attribute.strip()
                    found = hasattr(imported, attribute) or importlib.util.find_spec(f"{module}.{attribute}")
                    assert found, (module, attribute)
        for variable, value in (service.get("environment") or {}).items():
            if variable.startswith("TUNE_"):
                sources = "\n".join(
                    p.read_text()
                    for d in ("runtime", "roles", "storage", "cli")
                    for p in (ROOT / d).rglob("*.py")
                )
                assert f'"{variable}"' in sources, variable
            if variable == "TUNE_LAUNCH_BACKEND":
                assert value in LAUNCH_BACKENDS
            if variable == "TUNE_CHANGE_FEED":
                assert value.startswith("pubsub://") and value.endswith("-*"), value  # one subscription each
    assert set(roles) == {"api", "projector", "ledger", "dispatcher"}
    assert roles["dispatcher"]["environment"]["TUNE_LAUNCH_BACKEND"] == "ray"
    heartbeats = {role: s["command"][s["command"].index("--heartbeats") + 1] for role, s in roles.items()
                  if "--heartbeats" in s["command"]}  # fmt: skip
    assert set(heartbeats) == {"ledger", "dispatcher"} and len(set(heartbeats.values())) == 1
    assert next(iter(heartbeats.values())).startswith("pubsub://")


def test_the_readme_has_the_several_machines_section_naming_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on several machines", 1)[1].split("\n## ", 1)[0]
    for name in re.findall(r"`((?:deploy|docs)/[\w./]+|Dockerfile\.\w+|compose\.yaml)`", section):
        path = ROOT / name if "/" in name else DEPLOY / name
        assert path.exists(), name
    for role in re.findall(r"tune run ([\w|]+)", section)[0].split("|"):
        _command_options(role)
