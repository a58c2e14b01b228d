"""Serving fine-tuned models: the engine behind ``/v1/chat/completions`` (``runtime.serving.ChatEngine``).

``AdapterEngine`` loads each base model once and swaps LoRA adapters on it per request;
``ModelFiles`` copies what it loads from the bucket; ``NaiveEngine`` is the bench's baseline;
``ServingMeter`` batches each completion's tokens into the ledger. ``VllmEngine`` forwards to vLLM
servers (one per base model) on a CUDA machine instead (``TUNE_SERVING_ENGINE=vllm``).
"""

from runners.serving.engine import AdapterEngine, NaiveEngine
from runners.serving.files import ModelFiles
from runners.serving.metering import ServingMeter
from runners.serving.vllm import VllmEngine

__all__ = ["AdapterEngine", "ModelFiles", "NaiveEngine", "ServingMeter", "VllmEngine"]
