"""Bench: training tokens/s of our trainer against a bare peft loop, same model, data and settings.

Both sides use the bundled sample dataset tokenised by ``runners.trainer.data`` (same
collator), the same LoRA settings, batch size, optimizer (AdamW), schedule and step count,
in the same process, alternating A/B/A/B so machine noise hits both alike; the best
round of each is compared (the median is printed too), by wall time and by CPU time
(steadier where other processes share the cores).

- ``bare``: ``get_peft_model`` + ``torch.optim.AdamW`` + a plain loop (forward, backward,
  clip, step), counting non-padding tokens; no logging, no checkpoints.
- ``trainer``: ``runners.trainer.recipe.SFTRecipe`` - transformers' Trainer, our
  callbacks (a step event per step, a stop check per step), JSON-line events to a memory
  stream. Its time is ``SFTRecipe.train()`` (Trainer, callbacks, adapter save); model
  loading is excluded on both sides.
- ``entry point``: ``python -m runners.trainer`` as the runner starts it, wall time from
  spawn to exit (imports, model load, training, saving): printed for scale, since fixed
  costs dominate short runs.
- ``runner + trainer``: ``python -m runners.job_runner`` on a local bucket, as the dispatcher
  launches it, wall time from spawn to exit: ``Started`` recorded, base model and dataset
  copied into its working folder, the trainer above as its child with heartbeats, the
  adapter uploaded and the model registered. Its difference from the entry point is what the
  runner itself costs.

    .venv/bin/python bench/bench_trainer.py [--model smollm2-135m|tiny-llama] [--steps 8] [--rounds 2]
    .venv/bin/python bench/bench_trainer.py --smoke   # tiny-llama, 2 steps: only checks that it runs

The two spawn-to-exit rows run once each (``--no-entry-point`` skips both).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from smoke import parse_args  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler  # noqa: E402

from domain.training_config import TrainingConfig  # noqa: E402
from runners.attempt_spec import build_attempt_spec, write_job_run  # noqa: E402
from runners.base_models import MARKER, resolve_base_model  # noqa: E402
from runners.trainer.data import ChatCollator, ensure_chat_template, prepare_sft_data, read_chat_records  # noqa: E402
from runners.trainer.recipe import SFTRecipe  # noqa: E402
from runners.trainer.run_spec import RunSpec, parse_run_spec, write_run_spec  # noqa: E402
from runners.trainer.sinks import JsonLinesSink, StopSignal  # noqa: E402
from runners.workdir import upload_folder  # noqa: E402
from storage import LocalBucket  # noqa: E402
from storage.eventstore import open_user  # noqa: E402
from tests.unit.runners.builders import now, seed_dataset, submit_job  # noqa: E402

DATASET = ROOT / "runners" / "samples" / "brindlewick.jsonl"
QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _config(steps: int, batch_size: int) -> dict:
    return {
        "max_steps": steps,
        "batch_size": batch_size,
        "learning_rate": 1e-3,
        "lr_scheduler": "constant",
        "checkpoint_every_steps": 10_000,
        "max_seq_length": 512,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": QKVO},
    }


def bare_loop(base: Path, cfg: TrainingConfig) -> tuple[int, float, float]:
    """The baseline: (tokens, wall seconds, CPU seconds) of a plain peft training loop."""
    transformers.set_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ensure_chat_template(tokenizer)
    records = read_chat_records(DATASET)
    data = prepare_sft_data(
        records, tokenizer, max_length=cfg.max_seq_length, validation_split=0, seed=cfg.seed
    )
    steps = cfg.max_steps or 1
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.peft_target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=steps)
    loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=ChatCollator(tokenizer.pad_token_id),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    tokens, step = 0, 0
    start, cpu = time.perf_counter(), time.process_time()
    while step < steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            _ = loss.item()  # a real loop reports its loss too
            step += 1
            if step == steps:
                break
    return tokens, time.perf_counter() - start, time.process_time() - cpu


def trainer_run(spec: RunSpec) -> tuple[int, float, float]:
    """Our recipe in-process: (tokens, wall s, CPU s) of ``train()`` (Trainer, callbacks, adapter save)."""
    recipe = SFTRecipe(spec, JsonLinesSink(io.BytesIO(), StopSignal()))
    try:
        recipe.setup()
        start, cpu = time.perf_counter(), time.process_time()
        result = recipe.train()
        return int(result.metrics["tokens"]), time.perf_counter() - start, time.process_time() - cpu
    finally:
        recipe.cleanup()


def entry_point(spec: RunSpec, work: Path, threads: int) -> tuple[int, float]:
    """``python -m runners.trainer`` as a child process: (tokens, wall seconds from spawn to exit)."""
    run_yaml = write_run_spec(work / "run.yaml", spec)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runners.trainer", "--run", str(run_yaml), "--threads", str(threads)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    wall = time.perf_counter() - start
    from runners.trainer.events import Done, decode_event

    last = [e for e in map(decode_event, done.stdout.splitlines()) if isinstance(e, Done)][-1]
    return int(last.metrics["tokens"]), wall


def runner_run(base: Path, model: str, config: dict, work: Path, threads: int) -> tuple[int, float]:
    """``python -m runners.job_runner`` on a local bucket holding the base model, the sample dataset
    and a queued job: (tokens, wall seconds from spawn to exit); the job must have succeeded."""
    bucket = LocalBucket(work / "runner-bucket")
    upload_folder(bucket, base, f"base-models/{model}/", last=MARKER)
    app = open_user(bucket, "usr_bench")
    seed_dataset(bucket, app, "ds_bench", DATASET.read_bytes())
    job = submit_job(app, job_id="job_bench", dataset_id="ds_bench", base_model=model, **config)
    app.queue_job(job.job_id, now())
    run_object = write_job_run(bucket, build_attempt_spec(app.get_job(job.job_id), attempt=1))
    home = work / "runner-home"  # its work and base models; the keys stay this process's (TUNE_HOME)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    folders = ["--work-root", str(home / "work"), "--cache-dir", str(home / "base-models")]
    done = subprocess.run(
        [sys.executable, "-m", "runners.job_runner", bucket.url, run_object, *folders],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    wall = time.perf_counter() - start
    finished = open_user(bucket, "usr_bench").get_job(job.job_id)
    if finished.state != "succeeded":
        log = done.stderr.decode()
        raise RuntimeError(f"the runner left the job {finished.state}: {finished.error}\n{log}")
    return int(finished.metrics["tokens"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny-llama"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared box)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "base-models")
    parser.add_argument("--no-entry-point", action="store_true", help="skip the subprocess figure")
    args = parse_args(parser, model="tiny-llama", steps=2, batch_size=2, rounds=1)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    torch.set_num_threads(args.threads)
    base = resolve_base_model(args.model, args.cache)

    with scratch_dir("bench-trainer-") as tmp:
        work = Path(tmp)
        raw = {
            "job_id": "job_bench",
            "user_id": "usr_bench",
            "attempt": 1,
            "base_model_dir": str(base),
            "dataset_path": str(DATASET),
            "output_dir": str(work / "out"),
            "config": _config(args.steps, args.batch_size),
        }
        spec = parse_run_spec(raw)
        wall: dict[str, list[float]] = {"bare": [], "trainer": []}
        cpu: dict[str, list[float]] = {"bare": [], "trainer": []}
        sides = {"bare": lambda: bare_loop(base, spec.config), "trainer": lambda: trainer_run(spec)}
        for round_ in range(args.rounds):
            for name, fn in sides.items():
                tokens, seconds, cpu_seconds = fn()
                wall[name].append(tokens / seconds)
                cpu[name].append(tokens / cpu_seconds)
                print(
                    f"round {round_ + 1} {name:8s} {tokens:6d} tokens "
                    f"{seconds:7.2f} s wall {tokens / seconds:8.1f} tok/s "
                    f"{cpu_seconds:7.2f} s CPU {tokens / cpu_seconds:8.1f} tok/CPU-s"
                )
        print(f"\nmodel {args.model}, {args.steps} steps x batch {args.batch_size}, {args.threads} threads")
        for label, rates in (("tok/s (wall)", wall), ("tok/CPU-s", cpu)):
            best = {k: max(v) for k, v in rates.items()}
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(
                f"{label:13s} bare best {best['bare']:9.1f} median {med['bare']:9.1f} | "
                f"trainer best {best['trainer']:9.1f} median {med['trainer']:9.1f} | "
                f"ratio best {best['trainer'] / best['bare']:.3f}x median {med['trainer'] / med['bare']:.3f}x"
            )
        print("goal: trainer/bare >= 0.95")
        if not args.no_entry_point:
            cli_spec = parse_run_spec({**raw, "output_dir": str(work / "cli")})
            tokens, seconds = entry_point(cli_spec, work, args.threads)
            share = tokens / seconds / max(wall["bare"])
            print(
                f"entry point, spawn to exit (imports, load, train, save): {tokens} tokens in {seconds:.1f} s"
            )
            print(f"  = {tokens / seconds:.1f} tok/s, {share:.3f} of the bare loop's best training-only rate")
            runner_tokens, runner_seconds = runner_run(base, args.model, raw["config"], work, args.threads)
            runner_share = runner_tokens / runner_seconds / max(wall["bare"])
            print(
                f"runner + trainer, spawn to exit (Started, copies in, trainer, uploads, model registered): "
                f"{runner_tokens} tokens in {runner_seconds:.1f} s"
            )
            print(
                f"  = {runner_tokens / runner_seconds:.1f} tok/s, {runner_share:.3f} of the bare loop's best "
                f"training-only rate; the runner's own cost: {runner_seconds - seconds:+.1f} s"
            )


if __name__ == "__main__":
    main()
