"""The serving engine: each base model loaded once, LoRA adapters swapped on it per request.

``AdapterEngine`` keeps the base models it serves in memory (at most ``max_bases``, least
recently used dropped) and, on each, up to ``max_adapters`` adapters (peft multi-adapter:
``PeftModel.load_adapter`` on first use, ``set_adapter`` per request, ``delete_adapter`` for the
least recently used one past the bound). A request for a base model alone runs with the
adapters disabled.

Thread safety: one lock per resident base model covers choosing its adapter and generating, so
the requests on one base run one at a time (a CPU runs one forward at a time anyway) and an
adapter is loaded under the same lock that checks whether it is resident: concurrent requests
never load an adapter twice. Copying files from the bucket happens before the lock
(``ModelFiles``, a lock per file set). Requests on different base models run in parallel.

Decoding is a plain loop over the model's forward with its KV cache: greedy at temperature 0
(the same tokens as ``generate(do_sample=False)``), else temperature and nucleus (``top_p``)
sampling from a ``torch.Generator`` seeded per request (``seed``), so concurrent requests do
not share random state. Generation ends at an end-of-sequence token, at a ``stop`` string
(which is not returned) or after ``max_tokens``.

``NaiveEngine`` is the baseline of ``bench/bench_serving.py``: the same engine, but each request
wraps the base in a fresh ``PeftModel.from_pretrained`` of its adapter and unloads it after.

On a CUDA machine vLLM servers (``vllm serve <base> --enable-lora``) batch many adapters at once:
``runners.serving.vllm.VllmEngine`` forwards to them behind the same endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.serving.files import ModelFiles
from runtime.serving import AdapterRef, ChatMessage, Completion, Delta, Generation, ModelRef

__all__ = ["AdapterEngine", "NaiveEngine"]

log = logging.getLogger("serving")

_DONE = object()


@dataclass
class _Resident:
    """A base model in memory, with the adapters loaded on it (most recently used last)."""

    key: str
    model: Any
    tokenizer: Any
    eos_ids: frozenset[int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # adapter key -> peft name
    peft: Any = None


class AdapterEngine:
    """A ``ChatEngine`` serving base models and their LoRA adapters from one process.

    Args:
        files: where the models' files come from (``ModelFiles``).
        max_adapters: adapters kept resident per base model.
        max_bases: base models kept in memory.
    """

    def __init__(self, files: ModelFiles, *, max_adapters: int = 8, max_bases: int = 2) -> None:
        if max_adapters < 1 or max_bases < 1:
            raise ValueError("max_adapters and max_bases must be at least 1")
        self.files = files
        self.max_adapters = max_adapters
        self.max_bases = max_bases
        self.adapter_loads = 0
        """How many times an adapter was loaded (a test and the bench read it)."""
        self._bases: OrderedDict[str, _Resident] = OrderedDict()
        self._guard = threading.Lock()
        self._base_locks: dict[str, threading.Lock] = {}

    # -- the ChatEngine protocol --------------------------------------------------------------

    def complete(self, generation: Generation) -> Completion:
        last: Completion | None = None
        for item in self.stream(generation):
            if isinstance(item, Completion):
                last = item
        assert last is not None
        return last

    def stream(self, generation: Generation) -> Iterator[Delta | Completion]:
        adapter_dir = self.files.adapter(generation.adapter) if generation.adapter is not None else None
        resident = self._resident(generation.model)
        out: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        worker = threading.Thread(
            target=self._run,
            args=(resident, generation, adapter_dir, out, cancel),
            name="generate",
            daemon=True,
        )
        worker.start()
        try:
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()

    def close(self) -> None:
        with self._guard:
            self._bases.clear()

    # -- residency ----------------------------------------------------------------------------

    def _resident(self, ref: ModelRef) -> _Resident:
        with self._guard:
            found = self._bases.get(ref.key)
            if found is not None:
                self._bases.move_to_end(ref.key)
                return found
            load_lock = self._base_locks.setdefault(ref.key, threading.Lock())
        with load_lock:  # one load per base model, whoever asks at once
            with self._guard:
                found = self._bases.get(ref.key)
            if found is not None:
                return found
            resident = self._load_base(ref)
            with self._guard:
                self._bases[ref.key] = resident
                while len(self._bases) > self.max_bases:
                    self._bases.popitem(last=False)
            return resident

    def _load_base(self, ref: ModelRef) -> _Resident:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = self.files.base(ref)
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        eos = model.generation_config.eos_token_id
        eos_ids = {*(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        log.info("loaded base model %s in %.1fs", ref.key, time.perf_counter() - started)
        return _Resident(ref.key, model, tokenizer, frozenset(eos_ids))

    @contextmanager
    def _adapted(self, resident: _Resident, adapter: AdapterRef | None, folder: Path | None) -> Iterator[Any]:
        """The model to run with ``adapter`` active (the base alone when None); under ``resident.lock``."""
        if adapter is None or folder is None:
            if resident.peft is None:
                yield resident.model
            else:
                with resident.peft.disable_adapter():
                    yield resident.peft
            return
        name = resident.adapters.get(adapter.key)
        if name is None:
            name = _peft_name(adapter)
            self._load_adapter(resident, name, folder)
            resident.adapters[adapter.key] = name
            while len(resident.adapters) > self.max_adapters:
                _, old = resident.adapters.popitem(last=False)
                resident.peft.delete_adapter(old)
        resident.adapters.move_to_end(adapter.key)
        resident.peft.set_adapter(name)
        yield resident.peft

    def _load_adapter(self, resident: _Resident, name: str, folder: Path) -> None:
        from peft import PeftModel

        if resident.peft is None:
            resident.peft = PeftModel.from_pretrained(resident.model, folder, adapter_name=name)
            resident.peft.eval()
        else:
            resident.peft.load_adapter(folder, adapter_name=name)
        self.adapter_loads += 1

    # -- generation ---------------------------------------------------------------------------

    def _run(
        self,
        resident: _Resident,
        generation: Generation,
        adapter_dir: Path | None,
        out: queue.Queue[Any],
        cancel: threading.Event,
    ) -> None:
        try:
            with resident.lock:
                started = time.perf_counter()
                with self._adapted(resident, generation.adapter, adapter_dir) as model:
                    completion = _decode(model, resident, generation, out.put, cancel, started)
            out.put(completion)
        except BaseException as exc:  # handed to the consumer, which raises it
            out.put(exc)
        finally:
            out.put(_DONE)


class NaiveEngine(AdapterEngine):
    """The baseline: the adapter is loaded onto the base for each request and unloaded after."""

    @contextmanager
    def _adapted(self, resident: _Resident, adapter: AdapterRef | None, folder: Path | None) -> Iterator[Any]:
        if adapter is None or folder is None:
            yield resident.model
            return
        from peft import PeftModel

        peft = PeftModel.from_pretrained(resident.model, folder)
        self.adapter_loads += 1
        peft.eval()
        try:
            yield peft
        finally:
            resident.model = peft.unload()


def _peft_name(adapter: AdapterRef) -> str:
    """A peft adapter name for ``adapter`` (peft names are module attribute names: no ``/``, no ``.``)."""
    return "a" + hashlib.sha256(f"{adapter.key}@{adapter.sha256}".encode()).hexdigest()[:16]


def _prompt_ids(tokenizer: Any, messages: tuple[ChatMessage, ...]) -> Any:
    turns = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            turns, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"]
    text = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
    return tokenizer(text, return_tensors="pt")["input_ids"]


def _pick(logits: Any, generation: Generation, rng: Any) -> int:
    import torch

    if generation.temperature <= 0:
        return int(torch.argmax(logits, dim=-1))
    probs = torch.softmax(logits.float() / generation.temperature, dim=-1)
    if generation.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(ordered, dim=-1)
        keep = cumulative - ordered < generation.top_p  # the smallest prefix reaching top_p
        keep[0] = True  # and at least the likeliest token (top_p 0)
        ordered = torch.where(keep, ordered, torch.zeros_like(ordered))
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
    return int(torch.multinomial(probs, 1, generator=rng))


def _ready(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text``, decoded so far, may be sent: not a tail that may begin a stop string, nor
    trailing U+FFFD (the decoder's stand-in for the first bytes of a character, the rest to come)."""
    return min(len(text) - _held_back(text, stops), len(text.rstrip("\ufffd")))


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of ``text`` may begin a stop string (not sent yet)."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                held = max(held, n)
                break
    return held


def _decode(
    model: Any,
    resident: _Resident,
    generation: Generation,
    emit: Callable[[Delta], None],
    cancel: threading.Event,
    started: float,
) -> Completion:
    import torch

    tokenizer = resident.tokenizer
    input_ids = _prompt_ids(tokenizer, generation.messages)
    prompt_tokens = int(input_ids.shape[-1])
    rng = torch.Generator()
    rng.manual_seed(generation.seed if generation.seed is not None else int.from_bytes(_entropy(), "big"))
    tokens: list[int] = []
    sent = 0
    text = ""
    finish = "length"
    past = None
    step = input_ids
    with torch.inference_mode():
        while len(tokens) < generation.max_tokens and not cancel.is_set():
            output = model(input_ids=step, cache=past, use_cache=True, logits_to_keep=1)
            past = output.cache
            token = _pick(output.logits[0, -1, :], generation, rng)
            if token in resident.eos_ids:
                finish = "stop"
                break
            tokens.append(token)
            step = torch.tensor([[token]])
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((i for s in generation.stop if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            ready = _ready(text, generation.stop)
            if ready > sent:
                emit(Delta(text[sent:ready]))
                sent = ready
    text = text.rstrip("\ufffd")  # a character whose last bytes never came (max_tokens or the end cut it)
    if len(text) > sent:
        emit(Delta(text[sent:]))
    return Completion(
        text=text,
        finish_reason=finish,  # type: ignore[arg-type]
        prompt_tokens=prompt_tokens,
        completion_tokens=len(tokens),
        engine_ms=round((time.perf_counter() - started) * 1000),
    )


def _entropy() -> bytes:
    import os

    return os.urandom(7)
