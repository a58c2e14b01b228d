"""Helpers of the serving tests: LoRA adapters on tiny-llama, registered as users' models, and a live server.

``adapter(base, dest, seed)`` writes a LoRA adapter whose weights are random (not PEFT's
zero init), so two adapters answer differently; ``register_model`` puts one in the bucket as a
succeeded job's model, as a runner would; ``LiveServer`` runs an app on a free port in a thread
(uvicorn), for clients that speak real HTTP (the official ``openai`` client).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from domain.model import ModelWeights
from runtime.context import Runtime
from tests.emulators import free_port

BASE = "tiny-llama"


def adapter(base: Path, dest: Path, seed: int) -> Path:
    """A random LoRA adapter (q/v projections, rank 4) on the model in ``base``, saved to ``dest``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(model, config)
    peft.peft_config["default"].base_model_name_or_path = BASE
    peft.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base).save_pretrained(dest)  # as the trainer saves it
    return dest


def register_model(rt: Runtime, user_id: str, folder: Path, *, kind: str = "lora") -> str:
    """A succeeded job whose weights are the files in ``folder``, as a runner leaves it; its model id."""
    from domain.ids import new_id

    app, now = rt.user_app(user_id), rt.clock()
    dataset_id, model_id = new_id("ds"), new_id("mdl")
    app.upload_dataset(dataset_id, "d.jsonl", 10, "0" * 64, now)
    app.validate_dataset(dataset_id, "chat", 1, {}, now)
    job_id = app.submit_job(
        base_model=BASE,
        dataset_id=dataset_id,
        config={"epochs": 1},
        gpu_type="cpu",
        gpu_count=1,
        at=now,
        model_id=model_id,
    )
    prefix = f"users/{user_id}/models/{model_id}/weights/"
    for path in sorted(folder.iterdir()):
        rt.bucket.write(prefix + path.name, path.read_bytes())
    app.queue_job(job_id, now)
    app.start_job(job_id, 1, now)
    weights = ModelWeights(kind=kind, weights_prefix=prefix, sha256="0" * 64, size_bytes=1, metrics={})
    app.mark_succeeded(job_id, now, metrics={"loss": 1.0}, weights=weights)
    rt.committed(f"users/{user_id}")
    return model_id



class LiveServer:
    """``app`` served by uvicorn on 127.0.0.1 in a thread; ``url`` while inside ``with``."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
