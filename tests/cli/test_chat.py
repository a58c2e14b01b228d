"""``model chat`` with a tiny Llama and a LoRA adapter built here (CPU, a few seconds)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.cli.fake_api import FakeApi, Reply

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-layer Llama + byte-level BPE tokenizer (base) and an untrained LoRA adapter on it."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["hello there, how are you today? the sky is blue."] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>")
    fast.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    base = root / "base"
    model = LlamaForCausalLM(config)
    model.save_pretrained(base)
    fast.save_pretrained(base)
    adapter = root / "adapter" / "weights"
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(adapter)
    fast.save_pretrained(adapter)
    return {"base": base, "adapter": adapter.parent}


def _settings(**kw):
    from cli.chat import ChatSettings

    return ChatSettings(**{"temperature": 0.0, "max_new_tokens": 8, **kw})


def test_find_weights(tiny) -> None:
    from cli.chat import find_weights
    from cli.errors import CliError

    assert find_weights(tiny["adapter"]) == (tiny["adapter"] / "weights", "lora")
    assert find_weights(tiny["base"]) == (tiny["base"], "full")
    with pytest.raises(CliError, match="no adapter or model weights"):
        find_weights(tiny["base"].parent / "nothing-here")


def test_conversation_streams_and_keeps_history(tiny) -> None:
    from cli.chat import Conversation, load_model

    resolved: list[str] = []
    model, tok = load_model(
        tiny["adapter"], base_model="tiny", resolve=lambda n: resolved.append(n) or tiny["base"]
    )
    assert resolved == ["tiny"]
    assert type(model).__name__ == "PeftModel"
    conv = Conversation(model, tok, _settings(system="be brief"))
    pieces = list(conv.reply("hello"))
    answer = "".join(pieces).strip()
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]
    assert conv.messages[-1]["content"] == answer
    assert "".join(conv.reply("and again?")).strip() == conv.messages[-1]["content"]
    assert len(conv.messages) == 5  # the second turn saw the first (template of the whole history)
    conv.reset()
    assert conv.messages == [{"role": "system", "content": "be brief"}]


def test_cut_reply_drops_the_turn(tiny) -> None:
    from cli.chat import Conversation, load_model

    model, tok = load_model(tiny["adapter"], base_model="tiny", resolve=lambda _n: tiny["base"])
    conv = Conversation(model, tok, _settings(max_new_tokens=64))
    stream = conv.reply("hello")
    next(stream)
    stream.close()  # what Ctrl-C during a reply does
    assert conv.messages == []


def test_interactive_loop_ends_on_eof(tiny) -> None:
    from cli.chat import run_chat

    lines = iter(["hello", "/reset", "", "the sky?"])

    def ask(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    code = run_chat(
        tiny["adapter"],
        base_model="tiny",
        kind="lora",
        settings=_settings(),
        resolve=lambda _n: tiny["base"],
        input_fn=ask,
        out=out,
    )
    assert code == 0
    assert out.getvalue().startswith("chat ready")
    assert out.getvalue().count("\n") == 4  # banner, two replies, final newline at EOF


def test_model_chat_command_downloads_once_then_uses_cache(tiny, logged_in: FakeApi, run_cli) -> None:
    """The whole path: metadata, verified download into the cache, base from the adapter, one-shot."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tiny["adapter"] / "weights", arcname="weights")
    archive = buf.getvalue()
    sha = hashlib.sha256(archive).hexdigest()
    # the adapter records the base model's absolute path: the fallback when metadata names none
    logged_in.route("GET", "/models/m_1", Reply.json({"model_id": "m_1", "base_model": "", "kind": "lora"}))
    logged_in.route(
        "GET",
        "/models/m_1/download",
        Reply(200, archive, {"X-Content-SHA256": sha, "Content-Type": "application/gzip"}),
    )
    args = ("model", "chat", "--model-id", "m_1", "--prompt", "hello", "--temperature", "0")
    first = run_cli(*args, "--max-new-tokens", "4")
    assert first.code == 0, first.err
    assert first.out.endswith("\n") and first.out.count("\n") == 1
    second = run_cli(*args, "--max-new-tokens", "4")
    assert second.code == 0 and second.out == first.out  # greedy: same answer
    downloads = [r for r in logged_in.requests if r.path == "/models/m_1/download"]
    assert len(downloads) == 1
    bad = run_cli("model", "chat", "--model-id", "m_1", "--temperature", "-1")
    assert bad.code == 1 and "--temperature" in bad.err


def test_catalogue_base_model_through_the_runners_resolver(cli_env: Path) -> None:
    """base_model from the metadata resolves with runners.base_models into the CLI cache."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cli.chat import _default_resolver, run_chat

    base = _default_resolver("tiny-llama")
    assert base == cli_env / "cache" / "base-models" / "tiny-llama"
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    lora.save_pretrained(cli_env / "m" / "weights")
    out = io.StringIO()
    code = run_chat(
        cli_env / "m", base_model="tiny-llama", kind="lora", settings=_settings(), prompt="hi", out=out
    )
    assert code == 0 and out.getvalue().endswith("\n")


def test_unknown_base_model_is_a_cli_error(cli_env: Path) -> None:
    from cli.chat import _default_resolver
    from cli.errors import CliError

    with pytest.raises(CliError, match="no base model named") as info:
        _default_resolver("no-such-model")
    assert info.value.where == "base_model"
