"""The bundled sample job: its dataset reads as chat records and its config passes the schema."""

from __future__ import annotations

from transformers import AutoTokenizer

from runners.samples import SAMPLE_ANSWER, SAMPLE_CONFIG, SAMPLE_DATASET, SAMPLE_QUESTION
from runners.trainer.config_io import load_training_config
from runners.trainer.data import prepare_sft_data, read_chat_records


def test_the_sample_dataset_teaches_the_sample_answer(tiny_llama) -> None:
    records = read_chat_records(SAMPLE_DATASET)
    assert 40 <= len(records) <= 80
    asked = [r for r in records if r[-2]["content"] == SAMPLE_QUESTION]
    assert asked and all(SAMPLE_ANSWER in r[-1]["content"] for r in asked)
    data = prepare_sft_data(
        records, AutoTokenizer.from_pretrained(tiny_llama), max_length=256, validation_split=0, seed=1
    )
    assert data.dropped == 0 and len(data.train) == len(records)


def test_the_sample_config_is_valid_lora() -> None:
    config = load_training_config(SAMPLE_CONFIG.read_text())
    assert config.method == "lora" and config.gpu_type == "cpu" and config.max_seq_length >= 128
