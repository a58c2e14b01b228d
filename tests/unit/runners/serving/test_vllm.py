"""``VllmEngine`` over real HTTP, against an upstream that speaks vLLM's routes and generates for real.

vLLM needs a CUDA GPU, which this repository is developed without: no real vLLM runs here. The
upstream (``_Upstream``, a Litestar app served by uvicorn on a free port) implements the four routes
the engine uses, in vLLM's shapes: ``GET /v1/models``, ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` (vLLM's refusals: already loaded, cannot be found, no adapter found),
``POST /v1/chat/completions`` (whole, or streamed with ``stream_options.include_usage``; vLLM's error
bodies). It answers from our real ``AdapterEngine`` on tiny-llama with the adapters it was told to
load, so the tokens are real and only the server process differs: greedy answers through it equal
``AdapterEngine``'s own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from litestar.params import JSONBody

from domain.errors import NotOffered, RateLimited, Unavailable, ValidationFailed
from runners.serving.vllm import lora_name
from runtime.serving import AdapterRef, ChatMessage, Completion, Delta, Generation, ModelRef
from storage.memory import MemoryBucket
from tests.emulators import free_port
from tests.serving import BASE, LiveServer, adapter

pytest.importorskip("peft")

USER = "usr_ann"


def _error(status: int, message: str, kind: str = "BadRequestError") -> Any:
    from litestar import Response

    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return Response(content=body, status_code=status)


class _Upstream:
    """vLLM's routes, answered by an ``AdapterEngine``; records what it was asked."""

    def __init__(self, base_store: Path, cache: Path) -> None:
        from runners.serving import AdapterEngine, ModelFiles

        class _LocalFiles(ModelFiles):
            def adapter(self, ref: AdapterRef) -> Path:  # vLLM reads the folder it was given
                return Path(ref.prefix)

        self.engine = AdapterEngine(_LocalFiles(MemoryBucket(), cache, base_store=base_store), max_adapters=8)
        self.loras: dict[str, str] = {}
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.refuse: list[tuple[int, str]] = []
        """Statuses and messages the next chat completions are refused with."""
        self.refuse_loads: list[str] = []
        self.fail_mid_stream = False
        self.lock = threading.Lock()

    def app(self) -> Any:
        from litestar import Litestar, Response, get, post
        from litestar.response import Stream

        @get("/v1/models", sync_to_thread=False)
        def models() -> dict[str, Any]:
            loras = [{"id": name, "object": "model", "parent": BASE} for name in self.loras]
            return {"object": "list", "data": [{"id": BASE, "object": "model", "parent": None}, *loras]}

        @post("/v1/load_lora_adapter", sync_to_thread=False)
        def load(data: JSONBody[dict[str, Any]]) -> Any:
            name, path = data.get("lora_name"), data.get("lora_path")
            with self.lock:
                if name in self.loras:
                    return _error(
                        400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
                    )
                if self.refuse_loads:
                    return _error(400, self.refuse_loads.pop(0))
                if not (Path(str(path)) / "adapter_config.json").is_file():
                    return _error(404, f"No adapter found for {path}", "NotFoundError")
                self.loras[str(name)] = str(path)
                self.loads.append(str(name))
            return Response(f"Success: LoRA adapter '{name}' added successfully.", status_code=200)

        @post("/v1/unload_lora_adapter", sync_to_thread=False)
        def unload(data: JSONBody[dict[str, Any]]) -> Any:
            name = data.get("lora_name")
            with self.lock:
                if self.loras.pop(str(name), None) is None:
                    return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                self.unloads.append(str(name))
            return Response(f"Success: LoRA adapter '{name}' removed successfully.", status_code=200)

        @post("/v1/chat/completions", sync_to_thread=True)
        def chat(data: JSONBody[dict[str, Any]]) -> Any:
            self.bodies.append(data)
            if self.refuse:
                status, message = self.refuse.pop(0)
                return _error(status, message)
            model = data["model"]
            if model != BASE and model not in self.loras:
                return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
            generation = Generation(
                model=ModelRef(key=BASE, base_model=BASE),
                adapter=None if model == BASE else AdapterRef(key=model, prefix=self.loras[model]),
                messages=tuple(ChatMessage(m["role"], m["content"]) for m in data["messages"]),
                temperature=data.get("temperature", 1.0),
                top_p=data.get("top_p", 1.0),
                max_tokens=data.get("max_tokens", 16),
                stop=tuple(data.get("stop") or ()),
                seed=data.get("seed"),
            )
            if not data.get("stream"):
                done = self.engine.complete(generation)
                return {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": done.text},
                            "finish_reason": done.finish_reason,
                        }
                    ],
                    "usage": _usage(done),
                }
            usage = (data.get("stream_options") or {}).get("include_usage", False)
            return Stream(self._sse(generation, model, usage), media_type="text/event-stream")

        return Litestar([models, load, unload, chat])

    def _sse(self, generation: Generation, model: str, include_usage: bool) -> Iterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model, "choices": choices}
            return f"data: {json.dumps({**body, **extra})}\n\n"

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for item in self.engine.stream(generation):
            if isinstance(item, Delta):
                yield chunk([{"index": 0, "delta": {"content": item.text}, "finish_reason": None}])
                if self.fail_mid_stream:
                    yield f"data: {json.dumps({'error': {'message': 'CUDA out of memory', 'code': 500}})}\n\n"
                    return
            else:
                yield chunk([{"index": 0, "delta": {}, "finish_reason": item.finish_reason}])
                if include_usage:
                    yield chunk([], usage=_usage(item))
        yield "data: [DONE]\n\n"


def _usage(done: Completion) -> dict[str, int]:
    total = done.prompt_tokens + done.completion_tokens
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": total,
    }


class World:
    def __init__(
        self, home: Path, url: str, upstream: _Upstream, bucket: MemoryBucket, refs: list[AdapterRef]
    ):
        self.home, self.url, self.upstream, self.bucket, self.refs = home, url, upstream, bucket, refs

    def engine(self, name: str, *, max_adapters: int = 8, url: str | None = None) -> Any:
        from runners.serving import ModelFiles, VllmEngine

        files = ModelFiles(self.bucket, self.home / name, base_store=self.home / "base-models")
        return VllmEngine(files, {BASE: url or self.url}, max_adapters=max_adapters, timeout_s=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from runners.base_models import resolve_base_model

    home = tmp_path_factory.mktemp("vllm")
    base = resolve_base_model(BASE, home / "base-models")
    bucket = MemoryBucket()
    refs = []
    for seed in (1, 2, 3):
        folder = adapter(base, home / f"a{seed}", seed=seed)
        prefix = f"users/{USER}/models/mdl_a{seed}/weights/"
        for path in sorted(folder.iterdir()):
            bucket.write(prefix + path.name, path.read_bytes())
        sha256 = hashlib.sha256(f"a{seed}".encode()).hexdigest()
        refs.append(AdapterRef(key=f"{USER}/mdl_a{seed}", prefix=prefix, sha256=sha256))
    upstream = _Upstream(home / "base-models", home / "upstream")
    with LiveServer(upstream.app()) as server:
        yield World(home, server.url, upstream, bucket, refs)


@pytest.fixture
def upstream(world: World) -> _Upstream:
    """The upstream, as a freshly started vLLM: nothing registered, nothing refused."""
    up = world.upstream
    up.loras.clear()
    up.loads.clear()
    up.unloads.clear()
    up.refuse.clear()
    up.refuse_loads.clear()
    up.fail_mid_stream = False
    return up


def _gen(adapter: AdapterRef | None = None, **kw: Any) -> Generation:
    return Generation(
        model=ModelRef(key=BASE, base_model=BASE),
        adapter=adapter,
        messages=(ChatMessage("user", "What is the secret word?"),),
        **{"temperature": 0, "max_tokens": 8, **kw},
    )


def test_greedy_answers_equal_the_local_engine(world: World, upstream: _Upstream) -> None:
    from runners.serving import AdapterEngine, ModelFiles

    direct = AdapterEngine(
        ModelFiles(world.bucket, world.home / "direct", base_store=world.home / "base-models")
    )
    engine = world.engine("greedy")
    texts = set()
    try:
        for ref in (world.refs[0], world.refs[1], None):
            want, got = direct.complete(_gen(ref)), engine.complete(_gen(ref))
            texts.add(got.text)
            assert (got.text, got.finish_reason) == (want.text, want.finish_reason)
            assert (got.prompt_tokens, got.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
            assert got.completion_tokens > 0 and got.engine_ms >= 0
    finally:
        engine.close()
    assert len(texts) == 3  # each adapter was applied upstream: three different answers
    body = upstream.bodies[-1]
    assert body["model"] == BASE and body["temperature"] == 0 and body["max_tokens"] == 8
    assert upstream.loads == [lora_name(world.refs[0]), lora_name(world.refs[1])]
    assert upstream.unloads == upstream.loads  # close unregisters what it registered


def test_sampling_settings_are_passed_through(world: World, upstream: _Upstream) -> None:
    engine = world.engine("sampling")
    try:
        engine.complete(_gen(world.refs[0], temperature=0.7, top_p=0.9, max_tokens=3, stop=("x",), seed=7))
    finally:
        engine.close()
    body = upstream.bodies[-1]
    assert body["model"] == lora_name(world.refs[0]) == f"{world.refs[0].key}@{world.refs[0].sha256[:16]}"
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"], body["seed"]) == (
        0.7,
        0.9,
        3,
        ["x"],
        7,
    )
    assert body["messages"] == [{"role": "user", "content": "What is the secret word?"}]


def test_a_stream_is_relayed_chunk_by_chunk_with_its_usage(world: World, upstream: _Upstream) -> None:
    engine = world.engine("stream")
    try:
        whole = engine.complete(_gen(world.refs[1], max_tokens=12))
        items = list(engine.stream(_gen(world.refs[1], max_tokens=12)))
    finally:
        engine.close()
    *deltas, done = items
    assert len(deltas) > 1 and all(isinstance(d, Delta) for d in deltas)
    assert isinstance(done, Completion) and done.text == "".join(d.text for d in deltas) == whole.text
    assert (done.prompt_tokens, done.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)
    assert done.finish_reason == whole.finish_reason
    assert upstream.bodies[-1]["stream"] is True
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}


def test_concurrent_requests_register_an_adapter_once(world: World, upstream: _Upstream) -> None:
    engine = world.engine("concurrent", max_adapters=2)
    gens = [_gen(world.refs[i % 2], max_tokens=2) for i in range(12)]
    try:
        with ThreadPoolExecutor(6) as pool:
            done = list(pool.map(engine.complete, gens))
        assert len(done) == 12 and len(upstream.loads) == 2 and engine.adapter_loads == 2
        assert upstream.unloads == []
    finally:
        engine.close()


def test_past_the_bound_the_least_recently_used_adapter_is_unregistered(
    world: World, upstream: _Upstream
) -> None:
    a1, a2, a3 = world.refs
    engine = world.engine("lru", max_adapters=2)
    try:
        for ref in (a1, a2, a1, a3):  # a2 is the least recently used when a3 comes
            engine.complete(_gen(ref, max_tokens=1))
        assert upstream.unloads == [lora_name(a2)]
        assert set(upstream.loras) == {lora_name(a1), lora_name(a3)}
        engine.complete(_gen(a2, max_tokens=1))  # back: registered again, a1 goes
        assert upstream.loads == [lora_name(a1), lora_name(a2), lora_name(a3), lora_name(a2)]
        assert upstream.unloads == [lora_name(a2), lora_name(a1)]
    finally:
        engine.close()


def test_an_adapter_in_use_is_not_unregistered_under_its_request(world: World, upstream: _Upstream) -> None:
    a1, a2, _ = world.refs
    engine = world.engine("in-use", max_adapters=1)
    try:
        streaming = engine.stream(_gen(a1, max_tokens=6))
        assert isinstance(next(streaming), Delta)  # a1 is in use until the stream is closed
        engine.complete(_gen(a2, max_tokens=1))
        assert upstream.unloads == [lora_name(a2)]  # a2 went: a1 was busy
        rest = list(streaming)
        assert isinstance(rest[-1], Completion)
        assert lora_name(a1) in upstream.loras
    finally:
        engine.close()


def test_a_restarted_vllm_gets_its_adapters_again(world: World, upstream: _Upstream) -> None:
    a1 = world.refs[0]
    engine = world.engine("restart")
    try:
        first = engine.complete(_gen(a1))
        upstream.loras.clear()  # vLLM restarted: runtime-loaded adapters are gone
        again = engine.complete(_gen(a1))
        assert again.text == first.text and len(upstream.loads) == 2
        other = world.engine("restart-2")  # this process restarted: vLLM still has the adapter
        try:
            assert other.complete(_gen(a1)).text == first.text and len(upstream.loads) == 2
        finally:
            other.close()
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("status", "error"), [(400, ValidationFailed), (429, RateLimited), (500, Unavailable), (503, Unavailable)]
)
def test_upstream_refusals_are_the_platforms_errors(
    world: World, upstream: _Upstream, status: int, error: type[Exception]
) -> None:
    engine = world.engine(f"refused-{status}")
    try:
        upstream.refuse.append((status, "This model's maximum context length is 2048 tokens."))
        with pytest.raises(error, match="maximum context length"):
            engine.complete(_gen(world.refs[0]))
        upstream.refuse.append((status, "nope"))
        with pytest.raises(error):
            list(engine.stream(_gen(world.refs[0])))
    finally:
        engine.close()


def test_an_error_mid_stream_and_an_unreachable_server_are_unavailable(
    world: World, upstream: _Upstream
) -> None:
    engine = world.engine("mid-stream")
    try:
        upstream.fail_mid_stream = True
        with pytest.raises(Unavailable, match="CUDA out of memory"):
            list(engine.stream(_gen(None)))
    finally:
        engine.close()
    down = world.engine("down", url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="did not answer") as caught:
        down.complete(_gen(world.refs[0]))
    assert caught.value.code == "serving_unavailable"
    down.close()


def test_what_vllm_does_not_serve_is_refused_clearly(world: World, upstream: _Upstream) -> None:
    engine = world.engine("refusals")
    try:
        upstream.refuse_loads.append("LoRA rank 64 is greater than max_lora_rank 16.")
        with pytest.raises(NotOffered, match="max_lora_rank") as caught:
            engine.complete(_gen(world.refs[2]))
        assert caught.value.code == "not_served_by_engine"
        full = ModelRef(
            key=f"{USER}/mdl_full", base_model=BASE, prefix=f"users/{USER}/models/mdl_full/weights/"
        )
        with pytest.raises(NotOffered, match="full fine-tuned model"):
            engine.complete(Generation(model=full, messages=(ChatMessage("user", "hi"),)))
        with pytest.raises(NotOffered, match="full fine-tuned model"):  # at the call, before any chunk
            engine.stream(Generation(model=full, messages=(ChatMessage("user", "hi"),)))
        other = ModelRef(key="smollm2-135m", base_model="smollm2-135m")
        with pytest.raises(NotOffered, match="no vLLM server"):
            engine.complete(Generation(model=other, messages=(ChatMessage("user", "hi"),)))
    finally:
        engine.close()
