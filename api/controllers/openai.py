"""``/v1``: OpenAI-compatible model listing and chat completions (the official clients work as they are).

Point a client at ``<server>/v1`` with an API key (``tune key create``) or a login token:
``OpenAI(base_url="http://127.0.0.1:8600/v1", api_key=...)``. Errors come in OpenAI's shape
(``api.errors``).
"""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from api import openai_schemas as oa
from api.errors import documented
from api.services.serving import ServingService
from runtime.context import Runtime

_STREAMED = (
    "A chat completion from a base model or one of your fine-tuned models."
    " With `stream: true` the answer is `text/event-stream`: each event's data is a"
    " `ChatCompletionChunk` (the role, then text pieces, then the finish reason; with"
    " `stream_options.include_usage` a last chunk with the usage), and the last event's data is `[DONE]`."
)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]

    @get("/models", operation_id="list_openai_models", responses=documented(shape=oa.OpenAIErrorBody))
    async def list_models(
        self, serving: NamedDependency[ServingService], runtime: NamedDependency[Runtime]
    ) -> oa.OpenAIModelList:
        """The models you may call: the base models and your own ready models."""
        return await runtime.io(serving.models)

    @post(
        "/chat/completions",
        operation_id="create_chat_completion",
        status_code=200,
        responses=documented(
            404,
            503,
            meanings={404: "no such model for you (`code`: `model_not_found`)"},
            shape=oa.OpenAIErrorBody,
        ),
        description=_STREAMED,
    )
    async def chat_completions(
        self,
        data: JSONBody[oa.ChatCompletionRequest],
        serving: NamedDependency[ServingService],
        runtime: NamedDependency[Runtime],
    ) -> Response[oa.ChatCompletion]:
        """A chat completion from a base model or one of your fine-tuned models."""
        generation = await runtime.io(serving.generation, data)
        if data.stream:
            return ServerSentEvent(serving.stream(data, generation))  # type: ignore[return-value]
        return Response(await anyio.to_thread.run_sync(serving.complete, data, generation))
