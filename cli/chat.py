"""``model chat`` on this machine: load base + adapter, stream replies, keep the conversation.

This is the only CLI module that imports torch and transformers (inside its
functions, and it is itself imported only by the ``chat`` command). Base
models resolve through ``runners.base_models.resolve_base_model``.

In the interactive loop Ctrl-C during a reply cuts the reply short and returns
to the prompt; Ctrl-C or EOF (Ctrl-D) at the prompt ends the chat. ``/reset``
starts the conversation over, ``/exit`` quits.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cli.errors import CliError

__all__ = ["ChatSettings", "Conversation", "find_weights", "load_model", "run_chat"]

Resolver = Callable[[str], Any]


@dataclass(frozen=True)
class ChatSettings:
    system: str | None = None
    temperature: float = 0.7
    max_new_tokens: int = 256


def find_weights(root: Path) -> tuple[Path, str]:
    """The folder holding the weights in an unpacked archive, and its kind (``lora`` or ``full``)."""
    adapters = sorted(root.rglob("adapter_config.json"))
    if adapters:
        return adapters[0].parent, "lora"
    for config in sorted(root.rglob("config.json")):
        if any(config.parent.glob("*.safetensors")) or any(config.parent.glob("*.bin")):
            return config.parent, "full"
    raise CliError(f"no adapter or model weights found in {root}")


def _default_resolver(name: str) -> Any:
    """The catalogue's base model as a folder under the CLI cache (built or converted once)."""
    from cli.config import cache_dir
    from domain.errors import PlatformError
    from runners.base_models import resolve_base_model

    try:
        return resolve_base_model(name, cache_dir() / "base-models")
    except PlatformError as exc:
        raise CliError(exc.message, code=exc.code, where=exc.where) from exc


def _base_path(name: str | None, adapter_dir: Path, resolve: Resolver) -> str:
    """A local folder (or hub id) for the base model the adapter was trained on."""
    if name:
        try:
            return str(resolve(name))
        except ImportError as exc:
            raise CliError(f"cannot resolve base model {name!r}: the runners package is missing") from exc
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return str(recorded)
    raise CliError("the model's metadata names no base model and the adapter's is not available here")


def load_model(
    weights: Path, *, base_model: str | None, kind: str | None = None, resolve: Resolver | None = None
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from unpacked weights: a LoRA adapter on its base, or a full model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, found_kind = find_weights(weights)
    kind = (kind or found_kind).lower()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if kind == "full" or found_kind == "full":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tok_source = str(folder)
    else:
        from peft import PeftModel

        base = _base_path(base_model, folder, resolve or _default_resolver)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), folder)
        tok_source = str(folder) if (folder / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_source)
    model.to(device).eval()
    return model, tokenizer


class Conversation:
    """A chat history with a model; ``reply`` streams the next assistant turn."""

    def __init__(self, model: Any, tokenizer: Any, settings: ChatSettings) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.settings.system}] if self.settings.system else []

    def _inputs(self) -> dict[str, Any]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(
                self.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:  # a base model without a template: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in self.messages) + "assistant:"
            enc = tok(text, return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in enc.items()}

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text``; the turn is kept only if the reply finishes."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        self.messages.append({"role": "user", "content": text})
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = self.settings.temperature > 0
        kwargs = dict(
            **self._inputs(),
            streamer=streamer,
            max_new_tokens=self.settings.max_new_tokens,
            do_sample=sample,
            stopping_criteria=StoppingCriteriaList([_StopOnEvent()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if sample:
            kwargs["temperature"] = self.settings.temperature
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                self.model.generate(**kwargs)
            except BaseException as exc:
                failure.append(exc)
                streamer.text_queue.put(streamer.stop_signal)

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        parts: list[str] = []
        finished = False
        try:
            for piece in streamer:
                parts.append(piece)
                yield piece
            finished = not failure
        finally:
            stop.set()
            worker.join()
            if finished:
                self.messages.append({"role": "assistant", "content": "".join(parts).strip()})
            else:
                self.messages.pop()
        if failure:
            raise CliError(f"generation failed: {failure[0]}") from failure[0]


def _say(conv: Conversation, text: str, out: TextIO) -> None:
    for piece in conv.reply(text):
        out.write(piece)
        out.flush()
    out.write("\n")


def run_chat(
    weights: Path,
    *,
    base_model: str | None,
    kind: str | None,
    settings: ChatSettings,
    prompt: str | None = None,
    resolve: Resolver | None = None,
    input_fn: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> int:
    """Load the model, then answer ``prompt`` once or run the interactive loop."""
    out = out or sys.stdout
    model, tokenizer = load_model(weights, base_model=base_model, kind=kind, resolve=resolve)
    conv = Conversation(model, tokenizer, settings)
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
