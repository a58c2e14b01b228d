"""The recipe in-process on tiny-llama: it learns, resumes, checkpoints on stop; its outputs load plainly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import msgspec
import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from domain.errors import ValidationFailed
from runners.trainer.recipe import SFTRecipe, quiet_library_noise, run_training
from tests.unit.trainer.conftest import FACTS, RecordingSink, chat, greedy_answer


def test_lora_run_memorises_and_the_adapter_loads_with_plain_peft(make_spec, tiny_llama: Path) -> None:
    sink = RecordingSink()
    result = run_training(make_spec(), sink)

    assert result.status == "succeeded" and result.step == 60
    losses = [s[3] for s in sink.steps]
    assert losses[-1] < losses[0] / 10, losses
    model_dir = Path(result.model_dir)
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_llama)
    assert adapter["r"] == 16 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"])
    tuned = PeftModel.from_pretrained(base, model_dir)
    for question, answer in FACTS:
        assert greedy_answer(tuned, tokenizer, question) == answer
    untouched = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert greedy_answer(untouched, tokenizer, FACTS[0][0]) != FACTS[0][1]


def test_progress_reports_every_step_with_growing_token_counts(make_spec) -> None:
    sink = RecordingSink()
    run_training(make_spec(max_steps=5), sink)

    assert [s[0] for s in sink.steps] == [1, 2, 3, 4, 5]
    assert {s[1] for s in sink.steps} == {5}
    tokens = [s[4] for s in sink.steps]
    assert tokens == sorted(tokens) and tokens[0] > 0 and len(set(tokens)) == 5
    started = sink.started[0]
    assert (started.total_steps, started.start_step, started.train_examples) == (5, 0, 3)
    assert 0 < started.trainable_parameters < 100_000


def test_resume_continues_the_step_count_and_reproduces_the_uninterrupted_run(make_spec) -> None:
    full = RecordingSink()
    first = run_training(
        make_spec("a", max_steps=6, checkpoint_every_steps=3, lora={"r": 8, "dropout": 0.1}), full
    )
    checkpoint = Path(first.model_dir).parent / "checkpoints" / "checkpoint-3"
    assert (3, str(checkpoint)) in full.checkpoints

    resumed = RecordingSink()
    spec = make_spec(
        "b", resume_from=str(checkpoint), max_steps=6, checkpoint_every_steps=3, lora={"r": 8, "dropout": 0.1}
    )
    result = run_training(spec, resumed)

    assert resumed.started[0].start_step == 3
    assert [s[0] for s in resumed.steps] == [4, 5, 6] and result.step == 6
    assert [s[3] for s in resumed.steps] == pytest.approx([s[3] for s in full.steps[3:]], rel=1e-4)
    assert resumed.steps[0][4] > full.steps[2][4]  # token count carries over


def test_a_stop_saves_a_checkpoint_that_a_later_attempt_resumes(make_spec) -> None:
    sink = RecordingSink(
        stop_after=2
    )  # asks to stop once step 2 is reported: honoured at the next step's end
    stopped = run_training(make_spec("a", max_steps=8, checkpoint_every_steps=100), sink)

    assert stopped.status == "stopped" and stopped.step == 3 and stopped.model_dir is None
    checkpoint = Path(stopped.checkpoint)
    assert sink.checkpoints == [(3, str(checkpoint))]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 3
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint.parent.parent / "model").exists()

    after = RecordingSink()
    done = run_training(
        make_spec("b", resume_from=str(checkpoint), max_steps=8, checkpoint_every_steps=100), after
    )
    assert done.status == "succeeded" and [s[0] for s in after.steps] == [4, 5, 6, 7, 8]


def test_a_stop_asked_before_the_first_step_trains_nothing(make_spec) -> None:
    sink = RecordingSink(stop_after=0)
    result = run_training(make_spec(), sink)
    assert result.status == "stopped" and result.step == 0 and sink.steps == [] and result.checkpoint is None


def test_full_fine_tuning_saves_plain_weights_that_answer(make_spec, tmp_path: Path) -> None:
    stale = tmp_path / "out" / "model"
    stale.mkdir(parents=True)
    (stale / "adapter_config.json").write_text("{}")  # left by an earlier attempt: must not survive

    result = run_training(make_spec(method="full", max_steps=30, learning_rate=0.003), RecordingSink())

    model_dir = Path(result.model_dir)
    assert not (model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert greedy_answer(model, tokenizer, FACTS[0][0]) == FACTS[0][1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [{}, {"method": "full", "max_steps": 30, "learning_rate": 0.003}],
    ids=["lora", "full"],
)
def test_a_job_started_from_a_model_of_a_memorised_answer_begins_at_its_low_loss(
    make_spec, config: dict
) -> None:
    """``tune start --from``: the new job loads the model's adapter (or full weights) and trains on with
    its own optimizer and step count; its first loss is the model's, far below a fresh job's."""
    memorised = run_training(make_spec("memorised", **config), RecordingSink())
    fresh, started = RecordingSink(), RecordingSink()
    run_training(make_spec("fresh", **{**config, "max_steps": 2}), fresh)
    spec = msgspec.structs.replace(
        make_spec("started", **{**config, "max_steps": 2}), init_from=memorised.model_dir
    )
    result = run_training(spec, started)

    assert [s[0] for s in started.steps] == [1, 2] and started.started[0].start_step == 0
    assert started.steps[0][3] < fresh.steps[0][3] / 20, (started.steps, fresh.steps)
    assert result.status == "succeeded" and Path(result.model_dir, "adapter_config.json").exists() == (
        not config
    )


def test_a_start_point_without_the_methods_weights_is_refused_before_loading(
    make_spec, tmp_path: Path
) -> None:
    (tmp_path / "adapter").mkdir()
    spec = msgspec.structs.replace(make_spec(method="full"), init_from=str(tmp_path / "adapter"))
    with pytest.raises(ValidationFailed) as caught:
        SFTRecipe(spec, RecordingSink())
    assert caught.value.where == "init_from" and "no full weights" in caught.value.message


def test_validation_split_reports_a_validation_loss(make_spec, memo_dataset: Path) -> None:
    rows = [chat(f"Question number {i}?", f"Answer number {i}.") for i in range(10)]
    memo_dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sink = RecordingSink()
    result = run_training(make_spec(validation_split=0.2, max_steps=4, checkpoint_every_steps=2), sink)

    assert sink.started[0].train_examples == 8 and sink.started[0].eval_examples == 2
    assert [step for step, _ in sink.evals] == [2, 4]
    assert result.metrics["eval_loss"] == pytest.approx(sink.evals[-1][1])


def test_unknown_target_modules_are_refused_naming_the_key(make_spec) -> None:
    recipe = SFTRecipe(make_spec(lora={"target_modules": ["no_such_proj"]}), RecordingSink())
    with pytest.raises(ValidationFailed) as caught:
        recipe.setup()
    assert caught.value.where == "lora.target_modules"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"dataset_path": "/nonexistent/train.jsonl"}, "dataset_path"),
        ({"resume_from": "/tmp"}, "resume_from"),
    ],
)
def test_missing_inputs_fail_before_any_loading(make_spec, change: dict, where: str) -> None:
    import msgspec

    spec = msgspec.structs.replace(make_spec(), **change)
    with pytest.raises(ValidationFailed) as caught:
        SFTRecipe(spec, RecordingSink())
    assert caught.value.where == where


def test_a_stop_asked_at_the_last_step_still_saves_the_finished_model(make_spec) -> None:
    sink = RecordingSink(stop_after=3)  # first seen at the end of step 4, the last one
    result = run_training(make_spec(max_steps=4), sink)
    assert result.status == "succeeded" and result.step == 4 and Path(result.model_dir).is_dir()


def test_only_the_known_library_noise_is_left_out_of_the_job_log() -> None:
    gc_alias = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    vocab = "Could not find a config file in tiny-llama - will assume that the vocabulary was not modified."
    sent = [
        (FutureWarning, gc_alias),  # left out
        (UserWarning, vocab),  # left out
        (DeprecationWarning, gc_alias),  # another category shows
        (UserWarning, "Could not find the tokenizer"),  # another message shows
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_library_noise():
            for category, message in sent:
                warnings.warn(message, category, stacklevel=1)
        warnings.warn(gc_alias, FutureWarning, stacklevel=1)  # after the block it shows again
    assert [(w.category, str(w.message)) for w in caught] == [*sent[2:], (FutureWarning, gc_alias)]


def test_the_last_step_is_evaluated_when_it_is_no_checkpoint_step(make_spec, memo_dataset: Path) -> None:
    rows = [chat(f"Question number {i}?", f"Answer number {i}.") for i in range(10)]
    memo_dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sink = RecordingSink()
    result = run_training(make_spec(validation_split=0.2, max_steps=5, checkpoint_every_steps=2), sink)

    assert [step for step, _ in sink.evals] == [2, 4, 5]
    assert [step for step, _ in sink.checkpoints] == [2, 4]  # no early stopping: the last step is not saved
    assert result.metrics["eval_loss"] == pytest.approx(sink.evals[-1][1]) and result.reason is None
    best = min(sink.evals, key=lambda e: e[1])
    assert (result.metrics["best_step"], result.metrics["best_eval_loss"]) == (
        best[0],
        pytest.approx(best[1]),
    )


def test_early_stopping_ends_a_run_whose_eval_loss_rises_and_saves_the_best_checkpoint(
    make_spec, tmp_path: Path
) -> None:
    """Trained on FACTS, validated on the same questions with contradicting answers: the better it
    learns the training answers, the worse the validation loss gets."""
    from safetensors.torch import load_file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    validation = tmp_path / "validation.jsonl"
    contradicting = [
        "The secret word is pumpernickel.",
        "Nobody runs Brindlewick.",
        "Brindlewick is in Lima.",
    ]
    validation.write_text(
        "".join(json.dumps(chat(q, a)) + "\n" for (q, _), a in zip(FACTS, contradicting, strict=True))
    )
    spec = make_spec(validation_dataset_id="ds_val", early_stopping_patience=2, checkpoint_every_steps=5)
    spec = msgspec.structs.replace(spec, validation_path=str(validation))
    sink = RecordingSink()
    result = run_training(spec, sink)

    assert result.status == "succeeded" and result.reason == "early_stopped"
    assert sink.started[0].eval_examples == 3 and sink.started[0].train_examples == 3
    evals = dict(sink.evals)
    assert result.step < 60 and max(evals) == result.step, evals  # stopped well before max_steps
    best = min(evals, key=evals.__getitem__)
    later = [loss for step, loss in sink.evals if step > best]
    assert len(later) == 2 and all(loss >= evals[best] for loss in later), evals  # patience 2
    assert result.metrics["best_step"] == best and result.metrics["eval_loss"] == pytest.approx(evals[best])

    model_dir = Path(result.model_dir)  # the saved adapter is the best checkpoint's, not the last step's
    saved = load_file(model_dir / "adapter_model.safetensors")
    checkpoints = Path(spec.output_dir) / "checkpoints"
    at_best = load_file(checkpoints / f"checkpoint-{best}" / "adapter_model.safetensors")
    at_end = load_file(checkpoints / f"checkpoint-{result.step}" / "adapter_model.safetensors")
    assert saved.keys() == at_best.keys()
    assert all(saved[k].equal(at_best[k]) for k in saved)
    assert not all(saved[k].equal(at_end[k]) for k in saved)

    files = list((model_dir / "runs").glob("events.out.tfevents.*"))  # every point, the rising ones too
    assert [f.name for f in files] == ["events.out.tfevents.from-step-00000000"]
    scalars = EventAccumulator(str(model_dir / "runs")).Reload()
    assert [e.step for e in scalars.Scalars("train/loss")] == list(range(1, result.step + 1))
    assert [(e.step, e.value) for e in scalars.Scalars("eval/loss")] == [
        (step, pytest.approx(loss)) for step, loss in sink.evals
    ]
