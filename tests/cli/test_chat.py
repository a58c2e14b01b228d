"""``model chat`` through the server's ``/v1/chat/completions`` (a scripted API streaming SSE chunks)."""

from __future__ import annotations

import io
import json

import pytest

from tests.cli.fake_api import FakeApi, Reply, Request


def _sse(*pieces: str, finish: str = "stop", done: bool = True) -> Reply:
    def chunk(delta: dict, reason: str | None = None) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m_1"}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason}]
        return f"data: {json.dumps(body)}\n\n".encode()

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({}, finish))
    if done:
        events.append(b"data: [DONE]\n\n")
    return Reply(200, events, {"Content-Type": "text/event-stream"})


@pytest.fixture
def answering(logged_in: FakeApi) -> FakeApi:
    def answer(request: Request) -> Reply:
        turns = request.json()["messages"]
        return _sse("you said ", turns[-1]["content"], f" ({len(turns)} turns)")

    logged_in.route("POST", "/v1/chat/completions", answer)
    return logged_in


def _client(api: FakeApi):
    from cli.client import ApiClient

    return ApiClient(api.url, "token")


def test_conversation_streams_and_keeps_history(answering: FakeApi) -> None:
    from cli.chat import ChatSettings, Conversation

    conv = Conversation(_client(answering), "m_1", ChatSettings(system="be brief", temperature=0))
    assert "".join(conv.reply("hello")) == "you said hello (2 turns)"
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]
    assert "".join(conv.reply("again")) == "you said again (4 turns)"  # the history went along
    sent = answering.last("POST", "/v1/chat/completions").json()
    assert sent["model"] == "m_1" and sent["stream"] is True and sent["temperature"] == 0
    conv.reset()
    assert conv.messages == [{"role": "system", "content": "be brief"}]


def test_cut_reply_drops_the_turn(answering: FakeApi) -> None:
    from cli.chat import ChatSettings, Conversation

    conv = Conversation(_client(answering), "m_1", ChatSettings())
    stream = conv.reply("hello")
    next(stream)
    stream.close()  # what Ctrl-C during a reply does
    assert conv.messages == []


def test_a_stream_without_done_or_with_an_error_is_a_cli_error(logged_in: FakeApi) -> None:
    from cli.chat import ChatSettings, Conversation
    from cli.errors import CliError

    logged_in.route("POST", "/v1/chat/completions", _sse("half", done=False))
    conv = Conversation(_client(logged_in), "m_1", ChatSettings())
    with pytest.raises(CliError, match="ended the reply early"):
        list(conv.reply("hi"))
    assert conv.messages == []
    failed = Reply(200, [b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'])
    logged_in.route("POST", "/v1/chat/completions", failed)
    with pytest.raises(CliError, match="boom"):
        list(conv.reply("hi"))


def test_interactive_loop_ends_on_eof(answering: FakeApi) -> None:
    from cli.chat import ChatSettings, run_chat

    lines = iter(["hello", "/reset", "", "the sky?"])

    def ask(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    assert run_chat(_client(answering), "m_1", settings=ChatSettings(), input_fn=ask, out=out) == 0
    assert out.getvalue().startswith("chat ready")
    assert "you said the sky? (1 turns)" in out.getvalue()  # /reset started over
    assert out.getvalue().count("\n") == 4  # banner, two replies, final newline at EOF


def test_model_chat_command_goes_through_the_endpoint(answering: FakeApi, run_cli) -> None:
    args = ("model", "chat", "--model-id", "m_1", "--prompt", "hello", "--temperature", "0")
    result = run_cli(*args, "--max-new-tokens", "4")
    assert result.code == 0, result.err
    assert result.out == "you said hello (1 turns)\n"
    sent = answering.last("POST", "/v1/chat/completions").json()
    assert sent["max_tokens"] == 4 and sent["temperature"] == 0
    assert not [r for r in answering.requests if "download" in r.path]  # nothing downloaded
    bad = run_cli("model", "chat", "--model-id", "m_1", "--temperature", "-1")
    assert bad.code == 1 and "--temperature" in bad.err


def test_an_unknown_model_is_the_servers_404(logged_in: FakeApi, run_cli) -> None:
    error = {"message": "The model `nope` does not exist", "type": "not_found_error", "param": "model"}
    logged_in.route(
        "POST", "/v1/chat/completions", Reply.json({"error": {**error, "code": "model_not_found"}}, 404)
    )
    result = run_cli("model", "chat", "--model-id", "nope", "--prompt", "hi")
    assert result.code == 1 and "does not exist" in result.err and "404" in result.err
