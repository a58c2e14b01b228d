"""Copy a base model from the Hugging Face hub into the base-model store, or fail fast.

Where the hub cannot be reached a hub call would hang for about 50 s before failing, so we
refuse at once when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, and otherwise
probe the endpoint with a short TCP connect before downloading anything.
Gated repositories (Llama) read the token from ``HF_TOKEN`` as huggingface_hub always does.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

from domain import base_models
from domain.base_models import BaseModelSource, BaseModelUnavailable

__all__ = ["HubUnavailable", "download_from_hub", "hub_offline"]

_ALLOW = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]
_PROBE_TIMEOUT_S = 3.0


class HubUnavailable(BaseModelUnavailable):
    """A hub base model was asked for where the hub cannot be reached (or refused the download)."""


def hub_offline() -> bool:
    """True when this process's environment says the hub must not be called."""
    return base_models.hub_offline(os.environ)


def download_from_hub(name: str, repo_id: str, dest: Path) -> Path:
    """Download ``repo_id``'s config, tokenizer and safetensors weights into ``dest``; return ``dest``."""
    if hub_offline():
        raise HubUnavailable(
            base_models.offline_hub_error(BaseModelSource(name, "hub", repo_id)).message, where="base_model"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise HubUnavailable(
            f"base model {name!r} comes from the Hugging Face hub ({repo_id}), "
            "which is unreachable from here "
            f"({endpoint}); use a built-in model or add one from a local folder",
            where="base_model",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        snapshot_download(repo_id, local_dir=dest, allow_patterns=_ALLOW)
    except (HfHubHTTPError, OSError) as exc:
        raise HubUnavailable(f"could not copy {repo_id} from the hub: {exc}", where="base_model") from exc
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    return dest


def _reachable(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
