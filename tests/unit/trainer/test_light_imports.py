"""What the API, runner and CLI import from here must not pull in torch (3-4 s, ~350 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


LIGHT = [
    "runners.trainer",
    "runners.trainer.sinks",
    "runners.base_models",
    "runners.samples",
    "domain.training_config",
]


@pytest.mark.parametrize("module", LIGHT)
def test_importing_does_not_load_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
