"""What a model's download says about itself: a loadable adapter config, a model card, its manifest.

The weights folder as the trainer left it names the base model by its catalogue name (not
loadable elsewhere) and holds PEFT's empty README template; the download rewrites both, and
the ``SHA256SUMS`` manifest to match:

- ``adapter_config.json``'s ``base_model_name_or_path`` is the base's hub id when the catalogue
  entry is a hub model, ``base`` when the archive carries the base model (``with_base``: the
  folder ``base/`` beside ``weights/``; load from the archive's root), else the catalogue name;
- ``README.md`` is a model card: the base, the dataset id, the training config, the final
  metrics and how to load it; never a server path;
- the archive's ``config.json`` loses the bucket path of the weights.

Pure functions of bytes and dicts (no bucket, no clock), so the archive stays deterministic.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["adapter_config", "model_card", "public_config", "updated_manifest"]

_SERVER_KEYS = ("weights",)


def adapter_config(raw: bytes, base_ref: str) -> bytes:
    """``adapter_config.json`` naming ``base_ref`` as its base model."""
    config = json.loads(raw)
    config["base_model_name_or_path"] = base_ref
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def public_config(raw: bytes) -> bytes | None:
    """The model's ``config.json`` without server paths (None when it holds none: left as it is)."""
    config = json.loads(raw)
    if not any(key in config for key in _SERVER_KEYS):
        return None
    for key in _SERVER_KEYS:
        config.pop(key, None)
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def updated_manifest(raw: bytes, replaced: dict[str, bytes]) -> bytes:
    """``SHA256SUMS`` (``sha256sum -c`` format) with the lines of ``replaced`` files recomputed."""
    lines: dict[str, str] = {}
    for line in raw.decode().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            lines[name] = digest
    for name, data in replaced.items():
        lines[name] = hashlib.sha256(data).hexdigest()
    return "".join(f"{lines[name]}  {name}\n" for name in sorted(lines)).encode()


def _block(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, sort_keys=True) + "\n```"


def model_card(
    *,
    model_id: str,
    base_model: str,
    hub_id: str | None,
    kind: str,
    dataset_id: str | None,
    training_config: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    with_base: bool,
) -> bytes:
    """The ``README.md`` of a downloaded model (YAML front matter as the hub's model cards have)."""
    base_ref = "base" if with_base else (hub_id or base_model)
    front = ["---", "library_name: peft" if kind == "lora" else "library_name: transformers"]
    if hub_id:
        front.append(f"base_model: {hub_id}")
    front += ["tags:", "- tune", f"- {kind}", "---", ""]
    if kind == "lora":
        if with_base or hub_id:
            where = (
                "the folder `base/` of this archive" if with_base else f"`{hub_id}` on the Hugging Face hub"
            )
            load = (
                "```python\n"
                "from peft import PeftModel\n"
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'base = AutoModelForCausalLM.from_pretrained("{base_ref}")\n'
                'model = PeftModel.from_pretrained(base, "weights")\n'
                'tokenizer = AutoTokenizer.from_pretrained("weights")\n'
                "```\n\n"
                + (
                    "Run it from the archive's root folder (the base model is at `base/`).\n"
                    if with_base
                    else ""
                )
            )
            usage = f"A LoRA adapter; its base model is {where}.\n\n{load}"
        else:
            usage = (
                f"A LoRA adapter on `{base_model}`, a base model of this platform that is not on the hub:"
                " download it with `model download --with-base` to get the base in the archive, or"
                " `model download --merged` for a model that loads with transformers alone.\n"
            )
    else:
        usage = (
            'Full weights: `AutoModelForCausalLM.from_pretrained("weights")` and'
            ' `AutoTokenizer.from_pretrained("weights")`.\n'
        )
    lines = [
        *front,
        f"# {model_id}",
        "",
        f"Fine-tuned from **{base_model}**"
        + (f" (`{hub_id}`)" if hub_id else "")
        + f" on dataset `{dataset_id or 'unknown'}`.",
        "",
        "## How to load",
        "",
        usage,
        "## Training config",
        "",
        _block(training_config or {}),
        "",
        "## Final metrics",
        "",
        _block(metrics or {}),
        "",
        "## Checking the download",
        "",
        "`model show` reports the sha256 of the archive `model download` fetches (`sha256sum <model>.tar`"
        " gives the same); `weights/SHA256SUMS` lists each file's (`sha256sum -c SHA256SUMS` in `weights/`).",
        "",
    ]
    return "\n".join(lines).encode()
