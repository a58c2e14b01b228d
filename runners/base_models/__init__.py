"""Base models: the catalogue of names and a resolver that makes each one a local folder.

``resolve_base_model(name, cache_dir)`` returns ``<cache_dir>/<name>/`` (config, tokenizer,
safetensors weights), building ``tiny-llama``, converting ``smollm2-135m`` from its GGUF,
copying a hub model or an operator's local folder on first use. Importing this package does
not import torch.
"""

from domain.base_models import CATALOGUE, BaseModelSource, SourceKind
from runners.base_models.hub import HubUnavailable, hub_offline
from runners.base_models.resolve import MARKER, ModelFolderInfo, check_model_folder, resolve_base_model
from runners.base_models.smollm2 import WheelUnavailable

__all__ = [
    "CATALOGUE",
    "MARKER",
    "BaseModelSource",
    "HubUnavailable",
    "ModelFolderInfo",
    "SourceKind",
    "WheelUnavailable",
    "check_model_folder",
    "hub_offline",
    "resolve_base_model",
]
