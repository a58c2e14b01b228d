"""Serving many adapters of one base: the resident-adapter engine against loading the adapter per request.

``--adapters`` random LoRA adapters on one base model: smollm2-135m as the quick start converted
it (found in ``$TUNE_HOME/base-models``, ``<repo>/.tune/base-models`` or ``<repo>/.cache/base-models``;
``--smoke`` and a machine without one use tiny-llama, built here), or any model folder with
``--base-dir``; ``--clients`` threads each
sending ``--requests`` chat completions, interleaved over the adapters (client ``c``'s request
``i`` uses adapter ``(c + i) % adapters``), streamed, greedy, ``--tokens`` new tokens each.
Both engines run in the same process on the same files, one after the other:

- ``AdapterEngine`` (``runners.serving``): the base loaded once, adapters resident in an LRU
  (``load_adapter`` once, ``set_adapter`` per request);
- ``NaiveEngine``: the same, but ``PeftModel.from_pretrained`` of the request's adapter onto the
  base for each request and ``unload`` after (what a per-request HF PEFT server does).

Printed: requests/s, time to first token p50/p99 (from the request to its first text piece), the
adapter loads, the ratio of requests/s, and the resident engine's first-token p50 on the base
(the issue's figure: "first-token p50 on smollm2-135m"). Each engine is warmed up with one request per adapter
first (the base and the first adapter load are not what is compared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m"


def _converted_smollm2() -> Path | None:
    """The quick start's converted smollm2-135m (a folder with its marker), if this machine has one."""
    from runners.base_models import MARKER

    homes = [Path(os.environ["TUNE_HOME"])] if os.environ.get("TUNE_HOME") else []
    for store in (
        *(h / "base-models" for h in homes),
        ROOT / ".tune" / "base-models",
        ROOT / ".cache" / "base-models",
    ):
        if (store / SMOLLM2 / MARKER).is_file():
            return store / SMOLLM2
    return None


def _adapters(base: Path, root: Path, count: int, bucket) -> list:  # type: ignore[no-untyped-def]
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from runtime.serving import AdapterRef

    refs = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
        )
        folder = root / f"adapter-{i}"
        get_peft_model(model, config).save_pretrained(folder)
        prefix = f"users/bench/models/m{i}/weights/"
        for path in sorted(folder.iterdir()):
            bucket.write(prefix + path.name, path.read_bytes())
        refs.append(AdapterRef(key=f"bench/m{i}", prefix=prefix, sha256=str(i)))
    return refs


def _run(engine, base_name: str, refs: list, args: argparse.Namespace) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from runtime.serving import ChatMessage, Delta, Generation, ModelRef

    model = ModelRef(key=base_name, base_model=base_name)

    def generation(adapter) -> Generation:  # type: ignore[no-untyped-def]
        messages = (ChatMessage("user", "What is the secret word? Answer in one sentence."),)
        return Generation(
            model=model, adapter=adapter, messages=messages, temperature=0, max_tokens=args.tokens
        )

    for ref in refs:  # warm-up: the base and each adapter's files
        engine.complete(generation(ref))
    loads_before = engine.adapter_loads
    ttft: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(args.requests):
            start = time.perf_counter()
            first = None
            for item in engine.stream(generation(refs[(c + i) % len(refs)])):
                if first is None and isinstance(item, Delta):
                    first = time.perf_counter() - start
            with lock:
                ttft.append(first if first is not None else time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ttft.sort()
    return {
        "rps": len(ttft) / elapsed,
        "p50": statistics.median(ttft) * 1000,
        "p99": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1000,
        "loads": engine.adapter_loads - loads_before,
        "requests": len(ttft),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=6, help="per client")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--base-dir", type=Path, default=None, help="a model folder (default: tiny-llama)")
    args = parse_args(parser, adapters=2, clients=2, requests=2, tokens=4)

    import torch

    from runners.base_models import MARKER, resolve_base_model
    from runners.serving import AdapterEngine, ModelFiles, NaiveEngine
    from storage import LocalBucket

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    root = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="bench-serving-")) / "serving"
    store = root / "store"
    if args.base_dir is None and not args.smoke:
        args.base_dir = _converted_smollm2()
        if args.base_dir is None:
            print(f"no converted {SMOLLM2} here (run ./scripts/quickstart, or pass --base-dir): tiny-llama")
    if args.base_dir is not None:
        base_name = args.base_dir.name
        (store / base_name).parent.mkdir(parents=True, exist_ok=True)
        if not (store / base_name).exists():
            (store / base_name).symlink_to(args.base_dir.absolute())
        (store / base_name / MARKER).exists() or (store / base_name / MARKER).write_text("{}")
        base = store / base_name
    else:
        base_name = "tiny-llama"
        base = resolve_base_model(base_name, store)
    bucket = LocalBucket(root / "bucket")
    refs = _adapters(base, root / "adapters", args.adapters, bucket)
    files = ModelFiles(bucket, root / "cache", base_store=store)
    print(
        f"{base_name}: {args.adapters} adapters, {args.clients} clients x {args.requests} requests,"
        f" {args.tokens} tokens each, torch threads {torch.get_num_threads()}"
    )
    results = {}
    for name, engine in (
        ("resident", AdapterEngine(files, max_adapters=args.adapters)),
        ("naive", NaiveEngine(files)),
    ):
        r = results[name] = _run(engine, base_name, refs, args)
        print(
            f"  {name:9s} {r['rps']:7.2f} req/s  first token p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms"
            f"  adapter loads {r['loads']} in {r['requests']} requests"
        )
    print(f"  resident / naive requests/s: {results['resident']['rps'] / results['naive']['rps']:.2f}x")
    print(f"  naive / resident first-token p50: {results['naive']['p50'] / results['resident']['p50']:.2f}x")
    print(f"first-token p50 on {base_name}: {results['resident']['p50']:.1f} ms (resident adapters)")


if __name__ == "__main__":
    main()
