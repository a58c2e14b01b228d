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

from domain.errors import PlatformError

__all__ = ["HubUnavailable", "download_from_hub", "hub_offline"]

_ALLOW = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]
_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


class HubUnavailable(PlatformError):
    """A hub base model was asked for where the hub cannot be reached (or refused the download)."""

    code = "base_model_unavailable"


def hub_offline() -> bool:
    """True when the environment says the hub must not be called."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def download_from_hub(name: str, repo_id: str, dest: Path) -> Path:
    """Download ``repo_id``'s config, tokenizer and safetensors weights into ``dest``; return ``dest``."""
    if hub_offline():
        raise HubUnavailable(
            f"base model {name!r} comes from the Hugging Face hub ({repo_id}), "
            "but HF_HUB_OFFLINE is set here; "
            "use a built-in model (tiny-llama, smollm2-135m) or add one from a local folder",
            where="base_model",
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
