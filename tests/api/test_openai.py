"""The OpenAI-compatible routes through the official ``openai`` client, against a live server.

One server process (uvicorn in a thread) with the real engine (``runners.serving.AdapterEngine``)
on tiny-llama: two users' LoRA adapters on the one base, listed, called, streamed; other users'
models are invisible; errors come in OpenAI's shape, so the client raises its typed errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.auth import Principal
from api.services import AccountService
from roles.bootstrap import bootstrap
from runtime.context import Runtime
from tests.api.conftest import make_settings
from tests.serving import BASE, LiveServer, adapter, register_model

openai = pytest.importorskip("openai")
pytest.importorskip("peft")


class Served:
    def __init__(self, url: str, rt: Runtime, engine: Any, users: dict[str, str], models: dict[str, str]):
        self.url, self.rt, self.engine, self.users, self.models = url, rt, engine, users, models
        self.tokens: dict[str, str] = {}

    def client(self, who: str = "ann") -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.tokens[who], max_retries=0, timeout=60)


def _token(app: Any, rt: Runtime, user_id: str) -> str:
    info = rt.view_json(f"users/{user_id}/metadata/user_info.json") or {}
    principal = Principal(user_id, info.get("role", "user"), info.get("email", ""), 0)
    from api.auth import token_extras

    return str(app.state.jwt_auth.create_token(identifier=user_id, token_extras=token_extras(principal)))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from runners.base_models import resolve_base_model
    from runners.serving import AdapterEngine, ModelFiles

    home = tmp_path_factory.mktemp("serving")
    settings = make_settings(home)
    rt = Runtime(settings)
    bootstrap(rt)
    accounts = AccountService(rt)
    ann = accounts.create_user("ann@example.com", "pw-ann-correct horse", "user")
    bob = accounts.create_user("bob@example.com", "pw-bob-correct horse", "user")
    base = resolve_base_model(BASE, home / "base-models")
    models = {
        "a1": register_model(rt, ann, adapter(base, home / "a1", seed=1)),
        "a2": register_model(rt, ann, adapter(base, home / "a2", seed=2)),
        "bob": register_model(rt, bob, adapter(base, home / "b1", seed=3)),
    }
    engine = AdapterEngine(ModelFiles(rt.bucket, home / "serving", base_store=home / "base-models"))
    rt.serving = engine
    app = create_app(settings, runtime=rt)
    with LiveServer(app) as server:
        served = Served(server.url, rt, engine, {"ann": ann, "bob": bob}, models)
        served.tokens = {"ann": _token(app, rt, ann), "bob": _token(app, rt, bob)}
        yield served


def _ask(client: Any, model: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the secret word?"}],
        **{"temperature": 0, "max_tokens": 8, **kw},
    )


def test_a_user_lists_the_base_models_and_only_their_own(served: Served) -> None:
    ids = {m.id: m.owned_by for m in served.client("ann").models.list()}
    assert ids[served.models["a1"]] != "tune" and served.models["a2"] in ids
    assert ids[BASE] == "tune"
    assert served.models["bob"] not in ids


def test_two_adapters_of_one_base_in_one_process(served: Served) -> None:
    client = served.client()
    first = _ask(client, served.models["a1"])
    second = _ask(client, served.models["a2"])
    plain = _ask(client, BASE)
    assert first.object == "chat.completion" and first.model == served.models["a1"]
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    texts = {
        first.choices[0].message.content,
        second.choices[0].message.content,
        plain.choices[0].message.content,
    }
    assert len(texts) == 3, texts  # each adapter changes the answer; the base alone is a third
    loads = served.engine.adapter_loads
    again = _ask(client, served.models["a1"])
    assert again.choices[0].message.content == first.choices[0].message.content  # greedy: repeatable
    assert served.engine.adapter_loads == loads  # resident: not loaded again


def test_streaming_sends_chunks_then_done(served: Served) -> None:
    client = served.client()
    whole = _ask(client, served.models["a2"])
    stream = _ask(client, served.models["a2"], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done_on_the_wire(served: Served) -> None:
    import httpx

    body = {
        "model": served.models["a1"],
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {served.tokens['ann']}"}
    reply = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [line for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3


def test_sampling_with_a_seed_repeats_and_stop_cuts(served: Served) -> None:
    client = served.client()
    kw = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    one = _ask(client, served.models["a1"], **{**kw, "max_tokens": 12})
    two = _ask(client, served.models["a1"], **{**kw, "max_tokens": 12})
    assert one.choices[0].message.content == two.choices[0].message.content
    text = one.choices[0].message.content
    if len(text) > 2:
        stop = text[2:4]
        cut = _ask(client, served.models["a1"], **{**kw, "max_tokens": 12, "stop": [stop]})
        assert cut.choices[0].message.content == text[: text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_another_users_model_is_not_found_in_openais_shape(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(served.client("bob"), served.models["a1"])
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["type"] == "not_found_error"
    assert error["param"] == "model"


def test_bad_requests_and_missing_keys_in_openais_shape(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(served.client(), BASE, **{"temperature": 5})
    assert (
        caught.value.body["param"] == "temperature" and caught.value.body["type"] == "invalid_request_error"
    )
    stranger = openai.OpenAI(base_url=f"{served.url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.body["type"] == "authentication_error"


def test_the_served_hook_gets_the_counts(served: Served) -> None:
    seen: list[tuple[str, str, Any]] = []
    served.rt.completion_served.append(lambda user, model, done: seen.append((user, model, done)))
    try:
        reply = _ask(served.client(), served.models["a2"])
    finally:
        served.rt.completion_served.clear()
    (user, model, done), *_ = seen
    assert model == served.models["a2"] and user.startswith("usr_")
    assert (done.prompt_tokens, done.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert done.engine_ms >= 0


def test_concurrent_requests_never_load_a_resident_adapter_twice(tmp_path: Path, served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from runners.serving import AdapterEngine, ModelFiles
    from runtime.serving import AdapterRef, ChatMessage, Generation, ModelRef

    ann = served.users["ann"]
    base = served.rt.settings.home / "base-models"
    engine = AdapterEngine(ModelFiles(served.rt.bucket, tmp_path, base_store=base), max_adapters=2)
    refs = [
        AdapterRef(
            key=f"{ann}/{served.models[name]}", prefix=f"users/{ann}/models/{served.models[name]}/weights/"
        )
        for name in ("a1", "a2")
    ]
    gen = [
        Generation(
            model=ModelRef(key=BASE, base_model=BASE),
            adapter=refs[i % 2],
            messages=(ChatMessage("user", "hi"),),
            temperature=0,
            max_tokens=2,
        )
        for i in range(12)
    ]
    with ThreadPoolExecutor(6) as pool:
        done = list(pool.map(engine.complete, gen))
    assert len(done) == 12 and engine.adapter_loads == 2


def test_a_model_the_vllm_engine_does_not_serve_is_refused_before_streaming(
    tmp_path: Path, served: Served
) -> None:
    """On ``TUNE_SERVING_ENGINE=vllm`` a full model is a 422 ``not_served_by_engine``, streamed or not:
    the refusal comes before the status line, so the client raises its typed error."""
    from runners.serving import ModelFiles, VllmEngine
    from tests.emulators import free_port

    ann = served.users["ann"]
    full = register_model(served.rt, ann, tmp_path, kind="full")
    files = ModelFiles(served.rt.bucket, tmp_path / "serving", base_store=tmp_path / "base-models")
    local, served.rt.serving = served.rt.serving, VllmEngine(files, {BASE: f"http://127.0.0.1:{free_port()}"})
    try:
        for stream in (False, True):
            with pytest.raises(openai.UnprocessableEntityError) as caught:
                _ask(served.client(), full, stream=stream)
            assert caught.value.code == "not_served_by_engine" and "full fine-tuned" in caught.value.message
    finally:
        served.rt.serving = local
