"""``model chat``: a conversation with a model through the server's ``/v1/chat/completions``.

Nothing is downloaded or loaded here: the server's engine holds the base model and swaps the
model's adapter in (``runners.serving``), and the reply streams back as server-sent events (the
OpenAI chunk format). Any OpenAI client can do the same with an API key (``tune key create``).

In the interactive loop Ctrl-C during a reply cuts the reply short (closing the stream stops the
generation on the server) and returns to the prompt; Ctrl-C or EOF (Ctrl-D) at the prompt ends
the chat. ``/reset`` starts the conversation over, ``/exit`` quits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import ApiClient

__all__ = ["ChatSettings", "Conversation", "run_chat"]

COMPLETIONS = "/v1/chat/completions"


@dataclass(frozen=True)
class ChatSettings:
    system: str | None = None
    temperature: float = 0.7
    max_new_tokens: int = 256


class Conversation:
    """A chat history with a model on the server; ``reply`` streams the next assistant turn."""

    def __init__(self, client: ApiClient, model_id: str, settings: ChatSettings) -> None:
        self.client, self.model_id, self.settings = client, model_id, settings
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.settings.system}] if self.settings.system else []

    def _body(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "messages": self.messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_new_tokens,
            "stream": True,
        }

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text``; the turn is kept only if the reply finishes."""
        self.messages.append({"role": "user", "content": text})
        parts: list[str] = []
        finished = False
        try:
            for data in self.client.stream_events("POST", COMPLETIONS, body=self._body()):
                if data == "[DONE]":
                    finished = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise CliError(f"generation failed: {chunk['error'].get('message', chunk['error'])}")
                for choice in chunk.get("choices", ()):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                        yield piece
        finally:
            if finished:
                self.messages.append({"role": "assistant", "content": "".join(parts).strip()})
            else:
                self.messages.pop()
        if not finished:
            raise CliError("the server ended the reply early (no [DONE])")


def _say(conv: Conversation, text: str, out: TextIO) -> None:
    for piece in conv.reply(text):
        out.write(piece)
        out.flush()
    out.write("\n")


def run_chat(
    client: ApiClient,
    model_id: str,
    *,
    settings: ChatSettings,
    prompt: str | None = None,
    input_fn: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> int:
    """Answer ``prompt`` once, or run the interactive loop."""
    out = out or sys.stdout
    conv = Conversation(client, model_id, settings)
    if prompt is not None:
        _say(conv, prompt, out)
        return 0
    out.write("chat ready: Ctrl-C stops a reply, Ctrl-D or /exit quits, /reset starts over\n")
    while True:
        try:
            text = input_fn("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            conv.reset()
            continue
        if not text:
            continue
        try:
            _say(conv, text, out)
        except KeyboardInterrupt:
            out.write("\n[reply interrupted]\n")
