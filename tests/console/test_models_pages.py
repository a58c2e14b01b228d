"""The console's models pages: the list, a model's page (card, download), the chat playground."""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
from collections.abc import Iterator

import pytest

from runtime.serving import Completion, Delta, Generation
from tests.api.conftest import Api, User, finished_model
from tests.console.conftest import csrf_of, signed_in

HTML = {"Accept": "text/html"}


class EchoEngine:
    """A ``ChatEngine`` of our own for the playground: it answers with what it was asked."""

    def __init__(self) -> None:
        self.asked: list[Generation] = []

    def complete(self, generation: Generation) -> Completion:
        self.asked.append(generation)
        last = generation.messages[-1].content
        return Completion(
            text=f"echo: {last} <b>", finish_reason="stop", prompt_tokens=7, completion_tokens=3, engine_ms=1
        )

    def stream(self, generation: Generation) -> Iterator[Delta | Completion]:
        done = self.complete(generation)
        for word in re.findall(r"\S+\s*", done.text):  # the answer in pieces, as an engine generates it
            yield Delta(word)
        yield done

    def close(self) -> None:
        pass


@pytest.fixture
def engine(api: Api) -> Iterator[EchoEngine]:
    engine = EchoEngine()
    api.rt.serving = engine
    yield engine
    api.rt.serving = None


def test_the_models_list_and_a_models_page_with_its_card(api: Api, ann: User) -> None:
    job_id, model_id = finished_model(api, ann)
    client = signed_in(api, ann)
    page = client.get("/console/models")
    assert page.status_code == 200 and "<title>Models · tune console</title>" in page.text
    assert f'<a href="/console/models/{model_id}">{model_id}</a>' in page.text
    shown = client.get(f"/console/models/{model_id}")
    assert shown.status_code == 200 and f"<title>Model {model_id} · tune console</title>" in shown.text
    api_model = api.client.get(f"/models/{model_id}", headers=ann.headers).json()
    assert f'<code class="wrap" id="model-sha256">{api_model["sha256"]}</code>' in shown.text
    card = html.unescape(
        re.search(r'<pre class="card-text" id="model-card"[^>]*>(.*?)</pre>', shown.text, re.S)[1]
    )
    assert card.startswith("---") and f"# {model_id}" in card and job_id in shown.text
    assert f'href="/console/models/{model_id}/download"' in shown.text
    assert f'href="/console/models/chat?model={model_id}"' in shown.text


def test_the_download_is_the_apis_tar(api: Api, ann: User) -> None:
    _, model_id = finished_model(api, ann)
    client = signed_in(api, ann)
    mine = client.get(f"/console/models/{model_id}/download")
    theirs = api.client.get(f"/models/{model_id}/download", headers=ann.headers)
    assert mine.status_code == 200 and mine.content == theirs.content
    assert mine.headers["x-content-sha256"] == theirs.headers["x-content-sha256"]
    assert f'filename="{model_id}.tar"' in mine.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(mine.content)) as tar:
        names = tar.getnames()
    assert any(n.endswith("README.md") for n in names)


def test_another_users_model_answers_404(api: Api, ann: User, bob: User) -> None:
    _, model_id = finished_model(api, ann)
    client = signed_in(api, bob)
    for path in (f"/console/models/{model_id}", f"/console/models/{model_id}/download"):
        assert client.get(path, headers=HTML).status_code == 404, path


def test_the_playground_answers_through_the_serving_service(api: Api, ann: User, engine: EchoEngine) -> None:
    _, model_id = finished_model(api, ann)
    client = signed_in(api, ann)
    page = client.get("/console/models/chat", params={"model": model_id})
    assert page.status_code == 200 and "<title>Chat playground · tune console</title>" in page.text
    assert f'<option value="{model_id}" selected>' in page.text and '<label for="chat-message">' in page.text
    token = csrf_of(page.text)
    assert client.post("/console/models/chat", data={"model": model_id, "message": "hi"}).status_code == 403
    form = {"model": model_id, "message": "hello", "history": "[]", "_csrf_token": token}
    first = client.post("/console/models/chat", data=form, headers={"HX-Request": "true"})
    assert first.status_code == 200 and "<html" not in first.text  # htmx swaps the conversation alone
    assert "echo: hello &lt;b&gt;" in first.text and "7 prompt + 3 answer tokens" in first.text
    history = html.unescape(re.search(r'name="history" value="([^"]*)"', first.text)[1])
    assert [m["role"] for m in json.loads(history)] == ["user", "assistant"]
    second = client.post("/console/models/chat", data={**form, "message": "again", "history": history})
    assert second.status_code == 200 and "<html" in second.text
    asked = engine.asked[-1]
    assert [m.content for m in asked.messages] == ["hello", "echo: hello <b>", "again"]
    assert asked.adapter is not None and asked.adapter.key.endswith(model_id)


def test_the_playground_refuses_another_users_model_like_the_api(
    api: Api, ann: User, bob: User, engine: EchoEngine
) -> None:
    _, model_id = finished_model(api, ann)
    client = signed_in(api, bob)
    token = csrf_of(client.get("/console/models/chat").text)
    reply = client.post(
        "/console/models/chat", data={"model": model_id, "message": "hi", "_csrf_token": token}
    )
    assert reply.status_code == 404 and "does not exist or you do not have access" in reply.text
    assert engine.asked == []
    forged = client.post(
        "/console/models/chat",
        data={"model": "tiny-llama", "message": "hi", "history": '[{"role": "root"}]', "_csrf_token": token},
    )
    assert forged.status_code == 400


def test_without_a_chat_engine_the_playground_says_so(api: Api, ann: User) -> None:
    client = signed_in(api, ann)
    page = client.get("/console/models/chat")
    assert page.status_code == 200 and "This server runs no chat engine" in page.text
    assert 'src="/console/static/chat.js"' in page.text and 'id="chat-error"' in page.text
    reply = client.post(
        "/console/models/chat",
        data={"model": "tiny-llama", "message": "hi", "_csrf_token": csrf_of(page.text)},
        headers={"HX-Request": "true"},
    )
    assert reply.status_code == 503 and 'role="alert"' in reply.text  # what chat.js shows under the form


def _events(body: str) -> list[tuple[str, object]]:
    """The server-sent events in ``body``: (event, its data decoded from JSON)."""
    events = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        lines = block.split("\n")
        event = next((line[6:].strip() for line in lines if line.startswith("event:")), "message")
        data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        events.append((event, json.loads(data)))
    return events


STREAM = "/console/models/chat/stream"


def test_the_playground_streams_the_answer_as_it_is_generated(
    api: Api, ann: User, engine: EchoEngine
) -> None:
    _, model_id = finished_model(api, ann)
    served: list[tuple[str, str, Completion]] = []
    api.rt.completion_served.append(lambda user, model, done: served.append((user, model, done)))
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/models/chat").text)
    form = {"model": model_id, "message": "hello", "history": "[]", "_csrf_token": token}
    assert client.post(STREAM, data={**form, "_csrf_token": ""}).status_code == 403
    reply = client.post(STREAM, data=form)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = _events(reply.text)
    deltas = [data for event, data in events if event == "delta"]
    assert deltas == ["echo: ", "hello ", "<b>"]  # each piece as the engine gave it, unescaped (JSON)
    last, done = events[-1]
    assert last == "done" and isinstance(done, dict) and [e for e, _ in events].count("done") == 1
    assert (done["prompt_tokens"], done["completion_tokens"]) == (7, 3)
    turns = [(m["role"], m["content"]) for m in json.loads(done["history"])]
    assert turns == [("user", "hello"), ("assistant", "echo: hello <b>")]
    assert [(user, model) for user, model, _ in served] == [(ann.user_id, model_id)]  # metered as the API's
    again = client.post(STREAM, data={**form, "message": "again", "history": done["history"]})
    assert again.status_code == 200 and _events(again.text)[-1][0] == "done"
    assert [m.content for m in engine.asked[-1].messages] == ["hello", "echo: hello <b>", "again"]


def test_a_streamed_turn_is_refused_before_the_stream_and_a_failure_ends_it(
    api: Api, ann: User, bob: User, engine: EchoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model_id = finished_model(api, ann)
    client = signed_in(api, bob)
    token = csrf_of(client.get("/console/models/chat").text)
    refused = client.post(STREAM, data={"model": model_id, "message": "hi", "_csrf_token": token})
    assert refused.status_code == 404 and "does not exist or you do not have access" in refused.text
    assert engine.asked == []

    def broken(generation: Generation) -> Iterator[Delta | Completion]:
        yield Delta("half an ans")
        raise RuntimeError("the engine fell over")

    monkeypatch.setattr(engine, "stream", broken)
    client = signed_in(api, ann)
    token = csrf_of(client.get("/console/models/chat").text)
    reply = client.post(STREAM, data={"model": model_id, "message": "hi", "_csrf_token": token})
    assert reply.status_code == 200
    failed = ("failed", "generation failed: the engine fell over")
    assert _events(reply.text) == [("delta", "half an ans"), failed]
