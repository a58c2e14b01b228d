"""A ``ChatEngine`` that forwards to vLLM's OpenAI-compatible servers: one server per base model.

Each base model is served by its own vLLM server, started by the operator on a CUDA machine::

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve <base model folder> \\
        --served-model-name <base model name> --enable-lora --max-loras 8 --max-cpu-loras 8 \\
        --max-lora-rank 64

and named in ``TUNE_VLLM_URLS`` (``<base model>=<url>,...``; ``runtime.settings``). ``VllmEngine``:

- asks each server once (``GET /v1/models``) for the name it serves its base model by (the first
  model without a ``parent``), so ``--served-model-name`` is optional;
- on the first request for an adapter (named ``<user_id>/<model_id>@<sha256[:16]>``: a new version
  of the weights is a new adapter) copies it from the bucket to a local folder (``ModelFiles``, as
  the local engine does) and registers it with ``POST /v1/load_lora_adapter {"lora_name",
  "lora_path"}``: the vLLM server reads that folder, so it must see the same path (the same machine,
  or a volume mounted at the same place, readable by vLLM's account: ``tune serve`` makes its home
  private). Concurrent requests for one adapter load it once;
- keeps at most ``max_adapters`` adapters registered per server (``TUNE_SERVING_ADAPTERS``, to
  match ``--max-loras``/``--max-cpu-loras``): past it the least recently used one that no request
  is using is unregistered (``POST /v1/unload_lora_adapter``); an adapter in use is never
  unregistered under its request, so the bound can be passed while more adapters than it run at once;
- sends the request to ``POST /v1/chat/completions`` with ``model`` the adapter's name (or the base's
  served name), ``temperature``/``top_p``/``max_tokens``/``stop``/``seed`` passed through; a stream
  is relayed chunk by chunk as ``Delta`` items, with ``stream_options.include_usage`` so the last
  chunk carries the token counts. Closing the stream closes the connection, which aborts the
  request in vLLM. ``engine_ms`` is measured around the HTTP exchange (vLLM's own queueing included:
  unlike the local engine, it cannot be told apart from outside);
- survives a restarted vLLM server (it forgets runtime-loaded adapters): a 404 for an adapter it
  believed registered makes it register the adapter again and retry once; a server that already
  holds an adapter of that name (this process restarted) is taken as having it.

Errors are the platform's (``domain.errors``, mapped to HTTP by ``api/errors.py``)::

    the server unreachable, timed out, 5xx, an error mid-stream  Unavailable 503 (serving_unavailable)
    the server refused the request (400, 422: e.g. too long)      ValidationFailed 400
    the server is overloaded (429)                                RateLimited 429
    vLLM refuses to load the adapter (e.g. rank > max-lora-rank)  NotOffered 422 (not_served_by_engine)
    a full fine-tuned model, or a base with no server configured  NotOffered 422 (not_served_by_engine)

A full (non-LoRA) fine-tuned model is refused rather than sent to the local engine: on a GPU
serving machine a CPU copy of a whole model would be slow and would take the memory of the
process; an operator who wants those served runs ``TUNE_SERVING_ENGINE=local``.

Not run against a real vLLM here: this repository is developed without a GPU and vLLM needs one.
``tests/unit/runners/serving/test_vllm.py`` runs the engine over real HTTP against an upstream of
ours implementing vLLM's four routes (models, load and unload an adapter, chat completions with
streaming and ``include_usage``, vLLM's error bodies) that answers with the local ``AdapterEngine``
on tiny-llama: the forwarding, the adapter registry, the streaming relay, the usage and the error
mapping are tested; vLLM's own behaviour (batching, its LoRA cache, its exact messages) is not.
The shapes follow vLLM's ``vllm/entrypoints/openai/serving_models.py`` and ``api_server.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from domain.errors import NotOffered, PlatformError, RateLimited, Unavailable, ValidationFailed
from runners.serving.files import ModelFiles
from runtime.serving import AdapterRef, Completion, Delta, Generation, ModelRef

__all__ = ["VllmEngine", "lora_name"]

log = logging.getLogger("serving")

NOT_SERVED = "not_served_by_engine"
_UNAVAILABLE = "serving_unavailable"


def lora_name(adapter: AdapterRef) -> str:
    """The name an adapter is registered by in vLLM: its key and version (a new version, a new name)."""
    return f"{adapter.key}@{adapter.sha256[:16] or 'current'}"


@dataclass(eq=False)
class _Lora:
    """An adapter registered with a server; ``users``: the requests using it now."""

    name: str
    users: int = 0


@dataclass(eq=False)
class _Server:
    """One vLLM server (one base model) and the adapters this engine registered with it."""

    base_model: str
    url: str
    client: httpx.Client
    served_name: str | None = None
    loras: OrderedDict[str, _Lora] = field(default_factory=OrderedDict)  # least recently used first
    guard: threading.Lock = field(default_factory=threading.Lock)
    name_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def name_lock(self, name: str) -> threading.Lock:
        """The lock one adapter is registered and unregistered under (one at a time per name)."""
        with self.guard:
            return self.name_locks.setdefault(name, threading.Lock())


class VllmEngine:
    """A ``ChatEngine`` forwarding to one vLLM server per base model.

    Args:
        files: where adapters are copied from the bucket (a folder the vLLM servers can read).
        urls: the vLLM server of each base model (``{"smollm2-135m": "http://gpu-1:8000"}``).
        max_adapters: adapters kept registered per server (match vLLM's ``--max-loras``).
        timeout_s: the longest wait for a reply, or between two chunks of a stream.
        transport: an httpx transport (tests); None: the network.
    """

    def __init__(
        self,
        files: ModelFiles,
        urls: Mapping[str, str],
        *,
        max_adapters: int = 8,
        timeout_s: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        if not urls:
            raise ValueError("a vLLM engine needs the URL of at least one vLLM server")
        self.files = files
        self.max_adapters = max_adapters
        self.adapter_loads = 0
        """How many times an adapter was registered with a server (tests read it)."""
        timeout = httpx.Timeout(timeout_s, connect=10.0)
        self._servers = {
            base: _Server(
                base,
                url.rstrip("/"),
                httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport),
            )
            for base, url in urls.items()
        }

    # -- the ChatEngine protocol --------------------------------------------------------------

    def complete(self, generation: Generation) -> Completion:
        started = time.perf_counter()
        with self._chat(generation, stream=False) as response:
            response.read()
            reply = _json(response)
        choice = (reply.get("choices") or [{}])[0]
        usage = reply.get("usage") or {}
        return Completion(
            text=(choice.get("message") or {}).get("content") or "",
            finish_reason=_finish(choice.get("finish_reason")),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            engine_ms=round((time.perf_counter() - started) * 1000),
        )

    def stream(self, generation: Generation) -> Iterator[Delta | Completion]:
        """The answer piece by piece; what this engine does not serve is refused at the call, before
        any chunk (so the API answers it with its own status, not inside a started stream)."""
        self._server(generation.model)
        return self._relay(generation)

    def _relay(self, generation: Generation) -> Iterator[Delta | Completion]:
        started = time.perf_counter()
        pieces: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        with self._chat(generation, stream=True) as response:
            for chunk in _events(response):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        pieces.append(text)
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
        if usage is None:
            raise Unavailable("the vLLM server sent no token usage with its stream", code=_UNAVAILABLE)
        yield Completion(
            text="".join(pieces),
            finish_reason=_finish(finish),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            engine_ms=round((time.perf_counter() - started) * 1000),
        )

    def close(self) -> None:
        """Unregister the adapters this engine registered (best effort), then close the connections."""
        for server in self._servers.values():
            with server.guard:
                names = list(server.loras)
                server.loras.clear()
            for name in names:
                self._unload(server, name)
            server.client.close()

    # -- one exchange -------------------------------------------------------------------------

    @contextmanager
    def _chat(self, generation: Generation, *, stream: bool) -> Iterator[httpx.Response]:
        """The upstream's successful reply to ``generation`` (its body not read yet when streamed)."""
        server = self._server(generation.model)
        adapter = generation.adapter
        folder = self.files.adapter(adapter) if adapter is not None else None
        for attempt in (1, 2):
            lora = None if adapter is None or folder is None else self._acquire(server, adapter, folder)
            try:
                model = lora.name if lora is not None else self._served_name(server)
                body = _body(generation, model, stream=stream)
                with _mapped(server), server.client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code == 404 and lora is not None and attempt == 1:
                        log.info("vLLM at %s lost adapter %s: registering it again", server.url, lora.name)
                        self._forget(server, lora)
                        continue
                    if resp.status_code >= 400:
                        resp.read()
                        raise _refusal(resp, "chat completion")
                    yield resp
                    return
            finally:
                if lora is not None:
                    self._release(server, lora)
        raise AssertionError("unreachable")  # pragma: no cover

    def _server(self, model: ModelRef) -> _Server:
        if model.prefix is not None:
            raise NotOffered(
                f"{model.key} is a full fine-tuned model: this server's vLLM engine serves base models"
                " and their LoRA adapters only (not served by this engine)",
                where="model",
                code=NOT_SERVED,
            )
        server = self._servers.get(model.base_model)
        if server is None:
            raise NotOffered(
                f"base model {model.base_model!r} has no vLLM server here (TUNE_VLLM_URLS names"
                f" {', '.join(sorted(self._servers))}): not served by this engine",
                where="model",
                code=NOT_SERVED,
            )
        return server

    def _served_name(self, server: _Server) -> str:
        """The name the server serves its base model by (asked once)."""
        if server.served_name is None:
            with _mapped(server):
                reply = server.client.get("/v1/models")
            if reply.status_code >= 400:
                raise _refusal(reply, "model list")
            models = _json(reply).get("data") or []
            bases = [m["id"] for m in models if not m.get("parent")] or [m["id"] for m in models]
            if not bases:
                raise Unavailable(f"the vLLM server at {server.url} lists no model", code=_UNAVAILABLE)
            server.served_name = bases[0]
        return server.served_name

    # -- the adapter registry -----------------------------------------------------------------

    def _acquire(self, server: _Server, adapter: AdapterRef, folder: Path) -> _Lora:
        """The adapter registered with ``server`` and counted as in use (register it on first use)."""
        name = lora_name(adapter)
        with server.name_lock(name):
            with server.guard:
                lora = server.loras.get(name)
                if lora is not None:
                    lora.users += 1
                    server.loras.move_to_end(name)
                    return lora
            self._load(server, name, folder)
            with server.guard:
                lora = server.loras[name] = _Lora(name, users=1)
                victims = self._evictable(server)
        self._unload_unused(server, victims)
        return lora

    def _release(self, server: _Server, lora: _Lora) -> None:
        with server.guard:
            lora.users -= 1
            victims = self._evictable(server)
        self._unload_unused(server, victims)

    def _forget(self, server: _Server, lora: _Lora) -> None:
        """The server no longer has ``lora`` (it restarted): drop it, so the next use registers it."""
        with server.guard:
            if server.loras.get(lora.name) is lora:
                del server.loras[lora.name]

    def _evictable(self, server: _Server) -> list[str]:
        """Remove and return the least recently used idle adapters past the bound (under ``guard``)."""
        excess = len(server.loras) - self.max_adapters
        victims = [name for name, lora in server.loras.items() if lora.users == 0][: max(excess, 0)]
        for name in victims:
            del server.loras[name]
        return victims

    def _unload_unused(self, server: _Server, victims: list[str]) -> None:
        for name in victims:
            with server.name_lock(name):
                with server.guard:
                    if name in server.loras:  # registered again meanwhile: keep it
                        continue
                self._unload(server, name)

    def _load(self, server: _Server, name: str, folder: Path) -> None:
        with _mapped(server):
            reply = server.client.post(
                "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)}
            )
        if reply.status_code == 400 and "already been loaded" in _message(reply):
            return  # registered by an earlier run of this process
        if reply.status_code == 400:
            raise NotOffered(
                f"the vLLM server for {server.base_model} cannot load this adapter: {_message(reply)}"
                " (not served by this engine)",
                where="model",
                code=NOT_SERVED,
            )
        if reply.status_code >= 400:
            raise _refusal(reply, f"loading adapter {name}")
        self.adapter_loads += 1
        log.info("vLLM at %s: registered adapter %s", server.url, name)

    def _unload(self, server: _Server, name: str) -> None:
        """Unregister ``name``; a failure is logged (the server keeps a spare adapter), never raised."""
        try:
            reply = server.client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        except httpx.HTTPError as exc:
            log.warning("vLLM at %s: unregistering adapter %s failed: %s", server.url, name, exc)
            return
        if reply.status_code >= 400 and reply.status_code != 404:  # 404: it was gone already
            log.warning("vLLM at %s: unregistering adapter %s: %s", server.url, name, _message(reply))


# -- the wire -----------------------------------------------------------------------------------


def _body(generation: Generation, model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in generation.messages],
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "max_tokens": generation.max_tokens,
        "stream": stream,
    }
    if generation.stop:
        body["stop"] = list(generation.stop)
    if generation.seed is not None:
        body["seed"] = generation.seed
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream, up to ``[DONE]``; an error chunk raises."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        error = _error_of(chunk)
        if error is not None:
            raise Unavailable(f"the vLLM server failed during generation: {error}", code=_UNAVAILABLE)
        yield chunk


def _finish(reason: Any) -> Any:
    return "length" if reason == "length" else "stop"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise Unavailable(f"the vLLM server answered something else than JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}


def _error_of(body: Any) -> str | None:
    """The message of a vLLM error body: ``{"error": {...}}`` (newer) or ``{"object": "error", ...}``."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    if body.get("object") == "error":
        return str(body.get("message", ""))
    return None


def _message(response: httpx.Response) -> str:
    try:
        return _error_of(response.json()) or response.text
    except ValueError:
        return response.text


def _refusal(response: httpx.Response, what: str) -> PlatformError:
    status, message = response.status_code, _message(response)
    if status in (400, 422):
        return ValidationFailed(f"the model server refused the request: {message}")
    if status == 429:
        after = response.headers.get("retry-after", "")
        return RateLimited(
            f"the model server is busy: {message}", retry_after_s=int(after) if after.isdigit() else None
        )
    return Unavailable(f"the vLLM server failed ({what}, HTTP {status}): {message}", code=_UNAVAILABLE)


@contextmanager
def _mapped(server: _Server) -> Iterator[None]:
    """httpx's transport errors (refused, reset, timed out) as ``Unavailable``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise Unavailable(
            f"the vLLM server of {server.base_model} at {server.url} did not answer: {exc!r}",
            code=_UNAVAILABLE,
        ) from exc
