"""The console's models pages: the list, a model's page (its card, metrics, download) and the chat
playground.

The download is the API's (``ModelService.archive``: the same verified tar and headers); the
card is the ``README.md`` that download carries (``ModelService.card``). The playground sends
the conversation through the serving endpoint's own service (``ServingService``: the models the
caller may call, the budget check, metering), one answer at a time: the conversation so far
travels in the form (``history``, JSON), so the server keeps nothing between turns. An htmx
request gets the conversation alone; without scripts the whole page comes back.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream, Template

from api import openai_schemas as oa
from api.auth import Principal
from api.deps import PathId
from api.services import ModelService
from api.services.pages import PageRequest
from api.services.serving import ServingService
from api.streams import NO_COMPRESSION
from domain.errors import ValidationFailed
from runtime.serving import Completion, Delta

__all__ = ["ModelPages"]

PAGE_SIZE = 25
TAR = "application/x-tar"
MAX_TOKENS = 256
_History = msgspec.json.Decoder(list[oa.ChatMessageIn])
_encode = msgspec.json.encode


class ChatForm(msgspec.Struct, forbid_unknown_fields=False):
    """The playground's form: the model, the conversation so far (JSON), the new message."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=16_000)]
    history: Annotated[str, msgspec.Meta(max_length=200_000)] = "[]"
    system: Annotated[str, msgspec.Meta(max_length=4_000)] = ""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2048)] = MAX_TOKENS

    @classmethod
    def blank(cls, model: str) -> ChatForm:
        """The form before the first message (its defaults; ``model`` chosen)."""
        return msgspec.structs.replace(cls(model="-", message="-"), model=model, message="")


def _history(raw: str) -> list[oa.ChatMessageIn]:
    try:
        return _History.decode(raw or "[]")
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"the conversation is not one this page sent: {exc}", where="history") from exc
    except msgspec.DecodeError as exc:
        raise ValidationFailed("the conversation is not JSON", where="history") from exc


def _turns(messages: list[oa.ChatMessageIn]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text} for m in messages]


def _turn(data: ChatForm) -> tuple[list[oa.ChatMessageIn], oa.ChatCompletionRequest]:
    """The conversation with the new message, and the request that asks for its answer."""
    history = [m for m in _history(data.history) if m.role in ("user", "assistant")]
    conversation = [*history, oa.ChatMessageIn(role="user", content=data.message)]
    system = [oa.ChatMessageIn(role="system", content=data.system)] if data.system.strip() else []
    chat = oa.ChatCompletionRequest(
        model=data.model,
        messages=[*system, *conversation],
        temperature=data.temperature,
        max_tokens=data.max_tokens,
    )
    return conversation, chat


def _answer_events(
    pieces: Generator[Delta | Completion, None, None], conversation: list[oa.ChatMessageIn]
) -> Iterator[ServerSentEventMessage]:
    """The playground's stream: each piece of the answer, then the conversation it completes."""
    try:
        for item in pieces:
            if isinstance(item, Delta):
                yield ServerSentEventMessage(event="delta", data=_encode(item.text).decode())
            else:
                answer = oa.ChatMessageIn(role="assistant", content=item.text)
                done = _Done(
                    history=_encode([*conversation, answer]).decode(),
                    prompt_tokens=item.prompt_tokens,
                    completion_tokens=item.completion_tokens,
                )
                yield ServerSentEventMessage(event="done", data=_encode(done).decode())
    except Exception as exc:  # the stream has begun: the failure goes in it
        yield ServerSentEventMessage(event="failed", data=_encode(f"generation failed: {exc}").decode())
    finally:
        pieces.close()


class _Done(msgspec.Struct, frozen=True):
    """A streamed turn's end: the conversation for the form's ``history``, and the tokens counted."""

    history: str
    prompt_tokens: int
    completion_tokens: int


class ModelPages(Controller):
    """``/console/models``: the list, a model's page and download, the chat playground."""

    path = "/models"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def list_page(
        self,
        caller: NamedDependency[Principal],
        models: NamedDependency[ModelService],
        after: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> Template:
        """The signed-in user's fine-tuned models, newest first."""
        page = models.list(PageRequest(limit=PAGE_SIZE, after=after))
        context = {
            "title": "Models",
            "nav": "models",
            "caller": caller,
            "rows": page.models,
            "next": page.next,
        }
        return Template("models.html", context=context)

    @get("/chat", sync_to_thread=True)
    def chat_page(
        self,
        caller: NamedDependency[Principal],
        serving: NamedDependency[ServingService],
        model: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> Template:
        """The playground, with ``model`` chosen (default: the first the caller may call)."""
        return _chat(caller, serving, ChatForm.blank(model or ""), [], None)

    @post("/chat")
    async def chat(
        self,
        data: Annotated[ChatForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        caller: NamedDependency[Principal],
        serving: NamedDependency[ServingService],
        request: Request[Any, Any, Any],
    ) -> Template:
        """One turn: the conversation and the new message to ``POST /v1/chat/completions``'s service."""
        conversation, chat = _turn(data)
        generation = await anyio.to_thread.run_sync(serving.generation, chat)
        done = await anyio.to_thread.run_sync(serving.complete, chat, generation)
        answer = oa.ChatMessageIn(role="assistant", content=done.choices[0].message.content or "")
        partial = bool(getattr(request, "htmx", False))
        return _chat(caller, serving, data, [*conversation, answer], done.usage, partial=partial)

    @post("/chat/stream", status_code=200, opt={NO_COMPRESSION: True})
    async def chat_stream(
        self,
        data: Annotated[ChatForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        serving: NamedDependency[ServingService],
    ) -> ServerSentEvent:
        """One turn, the answer streamed as it is generated (what ``chat.js`` reads): ``delta`` events
        (a JSON string each), then ``done`` (the new ``history`` and the token counts) or ``failed`` (a
        message). A refusal (a model not yours, the budget spent, no engine) is the error ``/chat``
        gives, before the stream."""
        conversation, chat = _turn(data)
        generation = await anyio.to_thread.run_sync(serving.generation, chat)
        pieces = await anyio.to_thread.run_sync(serving.answer, chat, generation)
        return ServerSentEvent(_answer_events(pieces, conversation))

    @get("/{model_id:str}", sync_to_thread=True)
    def model_page(
        self, model_id: PathId, caller: NamedDependency[Principal], models: NamedDependency[ModelService]
    ) -> Template:
        """The model's metadata, training metrics, card, download and a link to chat with it."""
        model = models.get(model_id)
        context = {
            "title": f"Model {model_id}",
            "nav": "models",
            "caller": caller,
            "model": model,
            "metrics": sorted((model.metrics or {}).items()),
            "card": models.card(model) if model.status == "ready" else "",
        }
        return Template("model.html", context=context)

    @get("/{model_id:str}/download", opt={NO_COMPRESSION: True}, media_type=TAR)
    async def download(self, model_id: PathId, models: NamedDependency[ModelService]) -> Stream:
        """``GET /models/{model_id}/download``: the same tar, size and sha256 headers."""
        archive = await anyio.to_thread.run_sync(lambda: models.archive(model_id))
        headers = {
            "Content-Length": str(archive.size),
            "X-Content-SHA256": archive.sha256,
            "Content-Disposition": f'attachment; filename="{archive.filename}"',
        }
        return Stream(archive.chunks(), media_type=TAR, headers=headers)


def _chat(
    caller: Principal,
    serving: ServingService,
    form: ChatForm,
    conversation: list[oa.ChatMessageIn],
    usage: oa.CompletionUsage | None,
    *,
    partial: bool = False,
) -> Template:
    callable_models = [m.id for m in serving.models().data]
    context = {
        "title": "Chat playground",
        "nav": "models",
        "caller": caller,
        "models": callable_models,
        "model": form.model if form.model in callable_models else (callable_models or [""])[0],
        "form": form,
        "turns": _turns(conversation),
        "history": msgspec.json.encode(conversation).decode(),
        "usage": usage,
        "serving": serving.rt.serving is not None,
    }
    return Template("chat_log.html" if partial else "chat.html", context=context)
