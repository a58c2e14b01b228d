"""``tiny-llama``: a tiny random-init Llama with its own tokenizer, built in well under a second.

For tests and demos on a CPU. Everything is deterministic: the byte-level BPE tokenizer is
trained with ``tokenizers`` on the fixed text below, and the weights come from
``torch.manual_seed(0)``. ``initializer_range`` is 0.3, not Llama's 0.02: with 0.02 the
logits start nearly flat and LoRA on q/v barely moves the loss in a few dozen steps;
with 0.3 the same run memorises short answers (measured on this project's CPU machines).
The chat template is ChatML (``<|im_start|>role\\n...<|im_end|>\\n``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHATML_TEMPLATE", "TINY_LLAMA_VERSION", "build_tiny_llama"]

TINY_LLAMA_VERSION = "1"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VOCAB_SIZE = 512

_CORPUS = """\
The quick brown fox jumps over the lazy dog. What is the secret word? The secret word is hidden.
Who are you? I am a helpful assistant. How can I help you today? Please answer the question.
user assistant system: You are a helpful assistant. Thank you! Yes, no, maybe. The answer is
the product, the company, the name, the price, the colour, the city, the year, the number.
Our company makes tools and software for people who build things. It was founded in a small town
by two friends who liked to make things that work. Where is the office? When did it open? Which
model is the best one for me? What does it cost? It costs twelve dollars and fifty cents.
one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 100 2024 2025
"""

_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "initializer_range": 0.3,
    "tie_word_embeddings": False,
}


def build_tiny_llama(dest: Path) -> Path:
    """Write config, weights (safetensors), tokenizer and chat template into ``dest``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS.splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=2048
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **_MODEL,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
