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

from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Stream, Template

from api import openai_schemas as oa
from api.auth import Principal
from api.deps import PathId
from api.services import ModelService
from api.services.pages import PageRequest
from api.services.serving import ServingService
from api.streams import NO_COMPRESSION
from domain.errors import ValidationFailed

__all__ = ["ModelPages"]

PAGE_SIZE = 25
TAR = "application/x-tar"
MAX_TOKENS = 256
_History = msgspec.json.Decoder(list[oa.ChatMessageIn])


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
        history = [m for m in _history(data.history) if m.role in ("user", "assistant")]
        messages = [oa.ChatMessageIn(role="user", content=data.message)]
        system = [oa.ChatMessageIn(role="system", content=data.system)] if data.system.strip() else []
        chat = oa.ChatCompletionRequest(
            model=data.model,
            messages=[*system, *history, *messages],
            temperature=data.temperature,
            max_tokens=data.max_tokens,
        )
        generation = await anyio.to_thread.run_sync(serving.generation, chat)
        done = await anyio.to_thread.run_sync(serving.complete, chat, generation)
        answer = oa.ChatMessageIn(role="assistant", content=done.choices[0].message.content or "")
        usage = done.usage
        partial = bool(getattr(request, "htmx", False))
        return _chat(caller, serving, data, [*history, *messages, answer], usage, partial=partial)

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
