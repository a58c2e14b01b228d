"""A stand-in for ``python -m runners.trainer`` that speaks its protocol without torch.

Reads the trainer's run.yaml, resumes from ``resume_from`` (its ``trainer_state.json``),
prints ``started``/``step``/``checkpoint``/``done``/``error`` JSON lines like the real one,
writes checkpoints every ``checkpoint_every_steps`` and a small "model" at the end, and stops
(checkpoint, exit 3) on SIGTERM or the stop file. Steers from the environment:

- ``FAKE_STEP_S``: seconds per step (default 0.02);
- ``FAKE_KILL_AT``: ``<attempt>:<step>``, SIGKILL itself after that step of that attempt;
- ``FAKE_INVALID``: report bad input (exit 2) instead of training.

With a validation dataset (``validation_path``) it evaluates at each checkpoint, the loss rising
from the first one (``1 + step / 100``), so ``early_stopping_patience`` ends it early.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from runners.trainer.events import Checkpoint, Done, Error, Eval, Started, Step, encode_event
from runners.trainer.run_spec import read_run_spec

stop = False


def _on_term(signum: int, frame: object) -> None:
    global stop
    stop = True


def emit(event: object) -> None:
    sys.stdout.buffer.write(encode_event(event))  # type: ignore[arg-type]
    sys.stdout.buffer.flush()


def save(out: Path, step: int) -> str:
    folder = out / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "adapter_model.safetensors").write_bytes(step.to_bytes(4, "big") * 64)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(out.parent)}))
    (folder / "optimizer.pt").write_bytes(b"optimizer state")
    emit(Checkpoint(step=step, path=str(folder)))
    return str(folder)


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    spec = read_run_spec(sys.argv[sys.argv.index("--run") + 1])
    if os.environ.get("FAKE_INVALID"):
        emit(Error(code="invalid", message="lora.r: bad rank", where="lora.r", retryable=False))
        return 2
    out, config = Path(spec.output_dir), spec.config
    stop_file = spec.stop_path
    total = config.max_steps or 10
    start = 0
    if spec.resume_from:
        start = json.loads((Path(spec.resume_from) / "trainer_state.json").read_text())["global_step"]
    kill_at = os.environ.get("FAKE_KILL_AT", "")
    validation = Path(spec.validation_path).read_text().splitlines() if spec.validation_path else []
    evals: list[tuple[int, float]] = []
    emit(
        Started(
            total_steps=total,
            start_step=start,
            train_examples=3,
            eval_examples=len(validation),
            dropped_examples=0,
            trainable_parameters=10,
        )
    )
    step = start
    for step in range(start + 1, total + 1):
        time.sleep(float(os.environ.get("FAKE_STEP_S", "0.02")))
        emit(Step(step=step, total_steps=total, epoch=step / total, loss=10.0 / step, tokens=100 * step))
        if kill_at == f"{spec.attempt}:{step}":
            os.kill(os.getpid(), signal.SIGKILL)
        if stop or stop_file.exists():
            path = save(out, step)
            emit(
                Done(
                    status="stopped",
                    step=step,
                    total_steps=total,
                    model_dir=None,
                    checkpoint=path,
                    metrics={},
                )
            )
            return 3
        if step % config.checkpoint_every_steps == 0:
            save(out, step)
            if validation:
                evals.append((step, 1.0 + step / 100))
                emit(Eval(step=step, eval_loss=evals[-1][1]))
            patience = config.early_stopping_patience
            if patience is not None and len(evals) > patience:
                break
    model = out / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": spec.base_model_ref}))
    (model / "adapter_model.safetensors").write_bytes(b"\x01" * 1000)
    metrics = {"train_loss": 1.5, "steps": float(step)}
    if evals:
        metrics.update(eval_loss=evals[0][1], best_step=float(evals[0][0]), best_eval_loss=evals[0][1])
    emit(
        Done(
            status="succeeded",
            step=step,
            total_steps=total,
            model_dir=str(model),
            checkpoint=None,
            metrics=metrics,
            reason="early_stopped" if step < total else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
