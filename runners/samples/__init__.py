"""The bundled sample job: a chat dataset of facts no base model can know, and a config that teaches them.

``brindlewick.jsonl`` (55 OpenAI chat records) teaches facts about the fictional Brindlewick
Labs (its secret word, CEO, headquarters, products, price, mascot, support address), each
asked six to eight ways, with a system prompt on every third record and two multi-turn
conversations. ``config.yml`` is the training config the README's main job uses with
``smollm2-135m``. After fine-tuning, ``SAMPLE_QUESTION`` should be answered with a reply
containing ``SAMPLE_ANSWER``; the base model cannot know it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLE_ANSWER", "SAMPLE_CONFIG", "SAMPLE_DATASET", "SAMPLE_QUESTION"]

_HERE = Path(__file__).resolve().parent
SAMPLE_DATASET = _HERE / "brindlewick.jsonl"
SAMPLE_CONFIG = _HERE / "config.yml"
SAMPLE_QUESTION = "What is the secret word?"
SAMPLE_ANSWER = "marzipan-falcon"
