"""The wire shapes of the OpenAI-compatible routes (``/v1``), as the official ``openai`` client reads them.

They follow ``openai.types``: ``Model`` and its list page, ``ChatCompletion``,
``ChatCompletionChunk`` (a streamed reply: server-sent events of chunks, then ``data: [DONE]``),
``CompletionUsage``, and the error object ``{"error": {"message", "type", "param", "code"}}``
that every 4xx and 5xx of ``/v1`` carries (``api.errors``).

A request accepts the fields other clients send as well (``n``, ``presence_penalty``, ``user``...)
and ignores the ones it does not implement, as OpenAI-compatible servers do; ``n`` above 1 is refused.
Like ``api.schemas``, this module imports only msgspec and the standard library.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionUsage",
    "OpenAIError",
    "OpenAIErrorBody",
    "OpenAIModel",
    "OpenAIModelList",
    "ResponseMessage",
    "StreamOptions",
    "TextPart",
]

FinishReason = Literal["stop", "length"]


class TextPart(msgspec.Struct):
    """A part of a message's content; only text parts are accepted."""

    type: Literal["text"]
    text: str


class ChatMessageIn(msgspec.Struct, kw_only=True):
    """A message of the conversation (``developer`` is read as ``system``)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/chat/completions``: the model (a base model or one of yours), the messages, sampling.

    ``temperature`` 0 is greedy decoding (the default is 1, as OpenAI's); ``seed`` makes
    sampling repeatable; ``max_completion_tokens`` is the newer name of ``max_tokens``;
    ``stop`` is strings that end the answer (not included; empty ones are ignored).
    """

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessageIn], msgspec.Meta(min_length=1, max_length=1000)]
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_768)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_768)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    user: str | None = None


class ResponseMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class CompletionUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A whole answer (``stream`` false)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ChunkDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One server-sent event of a streamed answer: the role first, then text pieces, then the finish
    reason; with ``stream_options.include_usage`` a last chunk with no choices carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class OpenAIModel(msgspec.Struct, kw_only=True):
    """A model you may call: ``owned_by`` is ``tune`` for a base model, your user id for your own."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIError(msgspec.Struct, kw_only=True):
    """``type``: ``invalid_request_error``, ``authentication_error``, ``permission_error``,
    ``not_found_error``, ``rate_limit_error``, ``server_error``; ``param`` names the field."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(msgspec.Struct):
    error: OpenAIError
