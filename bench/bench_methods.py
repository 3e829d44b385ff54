"""Training speed of each method relative to SimCSE, and the extra memory of ESimCSE and InfoCSE.

Every method trains on the same model, batches, batch size and maximum length: one optimisation
step = collate (tokenisation, augmentation) + forward + backward + AdamW step, as in the training
loop (without RR, logging or evaluation). Each method runs in its own subprocess by default, so
its peak resident memory (VmHWM, Linux) is its own.

Reported memory:
- ``extra params+buffers``: ESimCSE's momentum encoder + full queue; InfoCSE's auxiliary network
  (frozen lower layers, c_head, LM head) and the difference of its BatchNorm head over SimCSE's MLP.
- ``extra Adam state``: AdamW moments of the extra trainable parameters (InfoCSE's c_head and LM head).
- ``peak RSS`` and its difference from SimCSE's (CPU), or peak CUDA memory on a GPU.

Usage (defaults: packaged MiniLM, batch 64, max_len 32, 2 threads)::

    python bench/bench_methods.py
    python bench/bench_methods.py --batch-size 8 --steps 2 --warmup 1    # a quick check
    python bench/bench_methods.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("simcse", "esimcse", "mixcse", "infocse", "promptbert")
MIB = 2**20


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process (Linux ``VmHWM``), or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def extra_memory(method: Any) -> dict[str, int]:
    """Bytes a method holds beyond SimCSE's backbone + MLP head, and the Adam state of its extra trainable parameters."""
    from rankcse.encoder import MLPHead
    from rankcse.methods.common import module_bytes

    extra, trainable = 0, 0
    if method.name == "esimcse" and method.momentum_encoder is not None:
        queue = method.args.queue_size * method.encoder.hidden_size * method.queue.element_size()
        extra = module_bytes(method.momentum_encoder) + queue
    if method.name == "infocse":
        aux = method.auxiliary_modules()
        extra = sum(module_bytes(m) for m in aux.values())
        if method.encoder.head is not None:
            extra += module_bytes(method.encoder.head) - module_bytes(MLPHead(method.encoder.hidden_size))
        trainable = sum(p.numel() * p.element_size() for name in ("c_head", "lm_head") for p in aux.get(name, _Empty()).parameters())
    return {"extra_params_buffers": extra, "extra_adam_state": 2 * trainable}


class _Empty:
    def parameters(self) -> list:
        return []


def bench_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time ``args.steps`` training steps of one method (after ``args.warmup``) in this process."""
    import torch

    from rankcse.build import build_method
    from rankcse.config import TrainConfig
    from rankcse.corpus import batch_rng, iterate_batches, load_corpus
    from rankcse.runtime import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = TrainConfig(method=name, model=args.model, batch_size=args.batch_size, max_len=args.max_len, seed=0).resolved()
    method = build_method(cfg).to(device)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=cfg.learning_rate)
    corpus = load_corpus(args.train_file)
    batches = iterate_batches(corpus, args.batch_size, seed=0, epoch=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        index, sentences = next(batches)
        batch = method.collate(sentences, batch_rng(0, 0, index))
        batch = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in batch.items()}
        method.train()
        out = method(batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "method": name,
        "steps": args.steps,
        "seconds": seconds,
        "steps_per_s": args.steps / seconds,
        **extra_memory(method),
    }
    result["peak_rss"] = peak_rss_bytes()
    if device.type == "cuda":
        result["peak_cuda"] = torch.cuda.max_memory_allocated(device)
    return result


def run_isolated(name: str, argv: list[str]) -> dict[str, Any]:
    """Run :func:`bench_one` for ``name`` in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--only", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark of {name} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown table of the results, speeds relative to SimCSE."""
    base = next((r for r in results if r["method"] == "simcse"), None)
    peak_key = "peak_cuda" if any("peak_cuda" in r for r in results) else "peak_rss"
    lines = [
        f"model {args.model} | batch {args.batch_size} | max_len {args.max_len} | threads "
        f"{args.threads or 'torch default'} | device {args.device} | {args.steps} timed steps after {args.warmup} warm-up",
        "",
        "| method | steps/s | relative to simcse | extra params+buffers (MiB) | extra "
        f"Adam state (MiB) | {peak_key.replace('_', ' ')} (MiB) | vs simcse (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        rel = r["steps_per_s"] / base["steps_per_s"] if base else float("nan")
        peak = r.get(peak_key)
        delta = peak - base[peak_key] if base and peak is not None and base.get(peak_key) is not None else None
        fmt = lambda b: "-" if b is None else f"{b / MIB:.1f}"  # noqa: E731
        lines.append(
            f"| {r['method']} | {r['steps_per_s']:.3f} | {rel:.2f} | {fmt(r['extra_params_buffers'])} "
            f"| {fmt(r['extra_adam_state'])} | {fmt(peak)} | {fmt(delta)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Command-line options, and the subset passed on to isolated runs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="Hugging Face model name or folder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--train-file", default=None, help="corpus (default: packaged)")
    p.add_argument("--in-process", action="store_true", help="run all methods in this process (peak RSS is then not per method)")
    p.add_argument("--json", action="store_true", help="print one JSON object per method instead of the table")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    forwarded = [
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--max-len",
        str(args.max_len),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if args.train_file:
        forwarded += ["--train-file", args.train_file]
    return args, forwarded


def main(argv: list[str] | None = None) -> int:
    """Benchmark the selected methods and print the table."""
    import logging

    logging.getLogger("rankcse").setLevel(logging.WARNING)
    args, forwarded = parse_args(argv)
    if args.only:
        print(json.dumps(bench_one(args.only, args)))
        return 0
    methods = list(args.methods)
    if "simcse" not in methods:
        methods.insert(0, "simcse")
    results = []
    for name in methods:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        results.append(bench_one(name, args) if args.in_process else run_isolated(name, forwarded))
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
