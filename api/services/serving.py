"""Serving: which models a user may call, and their chat completions, in OpenAI's shapes.

A user sees and calls the platform's base models (the catalogue) and their own ready models
(a succeeded job's model, not deleted); any other name is ``model_not_found`` (another user's
model answers exactly like an unknown one). A LoRA model runs as its adapter on its base model,
a full model as a model of its own. The engine is ``Runtime.serving`` (the role wires it in);
each finished completion is handed to ``Runtime.notify_completion_served`` (token counts and
engine milliseconds) for metering (``runners.serving.ServingMeter`` records them in the ledger).

A user whose monthly budget is spent (the billing view's net spend this month, GPU time and
serving together, has reached the limit) is refused before generation: 429 ``budget_exceeded``
(OpenAI's type ``insufficient_quota``). Completions already under way finish, and those served
since the meter's last flush are not in the view yet, so the spend can pass the limit by what was
served in one flush interval (``TUNE_SERVING_FLUSH_S``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Generator, Iterator
from datetime import datetime

import msgspec

from api import openai_schemas as oa
from api.services.base import UserService
from api.services.billing import BillingService
from api.services.models import MODELS
from api.services.pages import EVERY, Pages
from domain.errors import BudgetExceeded, NotFound, Unavailable, ValidationFailed
from domain.ids import ID_PATTERN
from domain.money import format_usd
from runtime.serving import AdapterRef, ChatEngine, ChatMessage, Completion, Delta, Generation, ModelRef
from storage import layout

__all__ = ["ServingService"]

PLATFORM_OWNER = "tune"
DEFAULT_MAX_TOKENS = 256
_ROLES = {"developer": "system"}
_ID = re.compile(ID_PATTERN)


def _epoch(iso: str | None) -> int:
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class ServingService(UserService):
    """The caller's view of the models they may chat with, and the chats themselves."""

    @property
    def engine(self) -> ChatEngine:
        if self.rt.serving is None:
            raise Unavailable("this server runs no chat engine", code="serving_unavailable")
        return self.rt.serving

    def models(self) -> oa.OpenAIModelList:
        data = [oa.OpenAIModel(id=name, created=0, owned_by=PLATFORM_OWNER) for name in sorted(self._bases())]
        listing = Pages(self.rt, self.user_id, MODELS).reply(EVERY)  # the index: current per model
        for row in listing.models:
            if row.status == "ready":
                created = _epoch(row.created_at)
                data.append(oa.OpenAIModel(id=row.model_id, created=created, owned_by=self.user_id))
        return oa.OpenAIModelList(data=data)

    def _bases(self) -> set[str]:
        return self.rt.base_model_names()

    def generation(self, request: oa.ChatCompletionRequest) -> Generation:
        """The request as the engine's ``Generation`` (404 ``model_not_found`` for a model not yours;
        429 ``budget_exceeded`` once the monthly budget is spent)."""
        model, adapter = self._resolve(request.model)
        self._check_budget()
        stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
        stop = tuple(s for s in stops if s)
        messages = tuple(ChatMessage(_ROLES.get(m.role, m.role), m.text) for m in request.messages)
        return Generation(
            model=model,
            adapter=adapter,
            messages=messages,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            max_tokens=request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
            stop=stop,
            seed=request.seed,
        )

    def _check_budget(self) -> None:
        usage = BillingService(self.rt, self.user_id).usage()
        limit = usage.budget.monthly_limit_usd_micros if usage.budget is not None else None
        spent = usage.current_period.total_cost_usd_micros
        if limit is not None and spent >= limit:
            raise BudgetExceeded(
                f"your monthly budget of {format_usd(limit)} is spent ({format_usd(spent)} this month,"
                f" {usage.current_period.period}); nothing more is served until next month or until"
                " the budget is raised (`tune budget set --monthly ...`)",
                where="budget",
            )

    def _resolve(self, name: str) -> tuple[ModelRef, AdapterRef | None]:
        missing = NotFound(
            f"The model `{name}` does not exist or you do not have access to it.",
            where="model",
            code="model_not_found",
        )
        if name in self._bases():
            return ModelRef(key=name, base_model=name), None
        if _ID.fullmatch(name) is None:
            raise missing
        found = self.rt.view_json(layout.model_metadata(self.user_id, name))
        if found is None or found.get("status") != "ready":
            raise missing
        base, kind, prefix = (
            found.get("base_model", ""),
            found.get("kind", ""),
            found.get("weights_prefix", ""),
        )
        if base not in self._bases():
            raise ValidationFailed(
                f"model {name} is built on {base!r}, which is not a base model served here", where="model"
            )
        key = f"{self.user_id}/{name}"
        if kind == "full":
            return ModelRef(key=key, base_model=base, prefix=prefix), None
        return ModelRef(key=base, base_model=base), AdapterRef(
            key=key, prefix=prefix, sha256=found.get("sha256") or ""
        )

    def complete(self, request: oa.ChatCompletionRequest, generation: Generation) -> oa.ChatCompletion:
        done = self.engine.complete(generation)
        self.rt.notify_completion_served(self.user_id, request.model, done)
        return oa.ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=request.model,
            choices=[
                oa.ChatChoice(
                    index=0,
                    message=oa.ResponseMessage(content=done.text),
                    finish_reason=done.finish_reason,
                )
            ],
            usage=_usage(done),
        )

    def answer(
        self, request: oa.ChatCompletionRequest, generation: Generation
    ) -> Generator[Delta | Completion, None, None]:
        """The engine's answer as it comes: its pieces (``Delta``), then the ``Completion``, noted as served
        (metered) when it comes. The engine may refuse here, before anything is sent; closing the iterator
        closes the engine's."""
        pieces = self.engine.stream(generation)

        def served() -> Generator[Delta | Completion, None, None]:
            try:
                for item in pieces:
                    if isinstance(item, Completion):
                        self.rt.notify_completion_served(self.user_id, request.model, item)
                    yield item
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

        return served()

    def stream(self, request: oa.ChatCompletionRequest, generation: Generation) -> Iterator[str]:
        """The answer as server-sent event data: JSON chunks, then ``[DONE]``."""
        ident, created = _completion_id(), int(time.time())

        def chunk(delta: oa.ChunkDelta, finish: str | None = None) -> str:
            choice = oa.ChunkChoice(index=0, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
            return _json(
                oa.ChatCompletionChunk(id=ident, created=created, model=request.model, choices=[choice])
            )

        pieces = self.answer(request, generation)  # an engine may refuse here, before the status line

        def events() -> Iterator[str]:
            yield chunk(oa.ChunkDelta(role="assistant", content=""))
            try:
                for item in pieces:
                    if isinstance(item, Delta):
                        yield chunk(oa.ChunkDelta(content=item.text))
                    else:
                        yield chunk(oa.ChunkDelta(), item.finish_reason)
                        if request.stream_options is not None and request.stream_options.include_usage:
                            yield _json(
                                oa.ChatCompletionChunk(
                                    id=ident,
                                    created=created,
                                    model=request.model,
                                    choices=[],
                                    usage=_usage(item),
                                )
                            )
            except Exception as exc:  # the status line is sent: the error goes in the stream (as OpenAI's)
                yield _json(
                    oa.OpenAIErrorBody(
                        oa.OpenAIError(message=f"generation failed: {exc}", type="server_error")
                    )
                )
            finally:
                pieces.close()
            yield "[DONE]"

        return events()


def _usage(done: Completion) -> oa.CompletionUsage:
    return oa.CompletionUsage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()
