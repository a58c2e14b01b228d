"""The serving seam: what the API asks of a chat engine, and what one answers.

The API (``api/services/serving.py``) turns an OpenAI-style request into a ``Generation`` and
hands it to the ``ChatEngine`` the role wired into ``Runtime.serving`` (``roles.embedded``:
``runners.serving.AdapterEngine``); the API never imports an engine. An engine loads each base
model once and puts the request's adapter on it (``runners/serving/``); on a CUDA machine
``runners.serving.VllmEngine`` implements the same protocol by forwarding to vLLM servers.

Every finished generation reports what metering needs: ``prompt_tokens``, ``completion_tokens``
and ``engine_ms`` (the milliseconds the engine spent on it, waiting for the model excluded).
Nothing records them yet: a metering hook reads them from the ``Completion`` (or the last
item of a stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

import msgspec

__all__ = ["AdapterRef", "ChatEngine", "ChatMessage", "Completion", "Delta", "Generation", "ModelRef"]

FinishReason = Literal["stop", "length"]


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str


class ModelRef(msgspec.Struct, frozen=True):
    """A model in the bucket: a catalogue base model (``prefix`` None) or a full model's weights.

    Attributes:
        key: what identifies it among the engine's resident models (the base's name, or
            ``<user_id>/<model_id>`` of a full model).
        base_model: the catalogue name (the source of a base model; a full model's base).
        prefix: the weights of a full fine-tuned model, ``users/<uid>/models/<id>/weights/``.
    """

    key: str
    base_model: str
    prefix: str | None = None


class AdapterRef(msgspec.Struct, frozen=True):
    """A LoRA adapter in the bucket: ``key`` is ``<user_id>/<model_id>``, ``sha256`` its version."""

    key: str
    prefix: str
    sha256: str = ""


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One chat completion to generate: the model (and adapter), the conversation and the sampling.

    ``temperature`` 0 is greedy decoding; ``seed`` makes sampling repeatable; generation ends at
    the model's end-of-sequence token, at any of ``stop`` (not included in the text) or after
    ``max_tokens`` new tokens.
    """

    model: ModelRef
    adapter: AdapterRef | None = None
    messages: tuple[ChatMessage, ...]
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """A finished generation, with the counts metering needs."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    engine_ms: int


class Delta(msgspec.Struct, frozen=True):
    """A piece of text of a streamed generation."""

    text: str


class ChatEngine(Protocol):
    """Generates chat completions on base models with adapters; safe to call from many threads."""

    def complete(self, generation: Generation) -> Completion:
        """Generate the whole answer."""
        ...

    def stream(self, generation: Generation) -> Iterator[Delta | Completion]:
        """The answer as ``Delta`` pieces, then its ``Completion`` (whose text is the whole answer).

        Closing the iterator early stops the generation.
        """
        ...

    def close(self) -> None:
        """Free the models."""
        ...
