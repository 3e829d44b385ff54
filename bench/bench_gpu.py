"""GPU benchmark in one run: fp32 vs bf16 training steps/s, and sweep throughput at 1, 0.5 and 0.25 GPU a trial.

    python bench/bench_gpu.py [--steps 50 --batch-size 64 --max-len 32 --trials 4 --trial-steps 200]

Prints two tables:
1. training steps/s of rankcse's training loop (``rankcse.train.run``, evaluation time excluded: its
   ``train_seconds``) in fp32 and under bf16 autocast, for a MiniLM-shaped encoder (6 layers, 384 wide)
   and a BERT-base-shaped one (12 layers, 768 wide), and the bf16 speed-up;
2. a sweep of ``--trials`` MiniLM-shaped trials on one GPU at 1, 0.5 and 0.25 GPU a trial (1, 2 and 4
   trials at once): wall time, trials per hour, training steps per second over the sweep, speed-up.

The encoders are built here (random weights, the packaged tokenizer): nothing is downloaded. It needs
CUDA and exits with status 2 where torch sees none. ``--rehearse-on-cpu`` runs the same code on tiny
sizes on the CPU (Ray told of one fake GPU, trials on CPU) to check the script, not to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from rankcse.config import TrainConfig
from rankcse.train import run

#: name -> (layers, hidden, heads, intermediate): the shapes of all-MiniLM-L6-v2 and bert-base-uncased.
SHAPES = {"MiniLM-shaped (6 x 384)": (6, 384, 12, 1536), "BERT-base-shaped (12 x 768)": (12, 768, 12, 3072)}
TINY = {"tiny (2 x 32), rehearsal": (2, 32, 2, 64)}
GPUS_PER_TRIAL = (1.0, 0.5, 0.25)


def build_encoder(folder: Path, layers: int, hidden: int, heads: int, intermediate: int) -> str:
    """A BERT of the given shape with random weights (seed 0) and the packaged tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankcse.paths import packaged_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def steps_per_second(model: str, precision: str, device: str, steps: int, batch_size: int, max_len: int, out: Path) -> float:
    """Training steps/s of one short run (its train_seconds: the evaluations at its start and end are not counted)."""
    cfg = TrainConfig(
        model=model,
        device=device,
        precision=precision,
        max_steps=steps,
        eval_every=steps,
        batch_size=batch_size,
        max_len=max_len,
        probe_size=64,
        final_tasks=[],
        log_every=10_000,
        save_best=False,
        checkpoint_every_evals=0,
    )
    run(cfg, out, overwrite=True)
    final = json.loads((out / "final.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return steps / final["train_seconds"]


def precision_table(shapes: dict, device: str, args: argparse.Namespace, work: Path) -> None:
    print(f"training steps/s of rankcse.train.run on {device}: batch {args.batch_size}, max length {args.max_len}, {args.steps} steps")
    print()
    print("| encoder | fp32 steps/s | bf16 autocast steps/s | bf16 speed-up |")
    print("| --- | --- | --- | --- |")
    for name, shape in shapes.items():
        model = build_encoder(work / f"model-{shape[1]}", *shape)
        steps_per_second(model, "fp32", device, 3, args.batch_size, args.max_len, work / "warmup")  # kernels, caches: not timed
        fp32 = steps_per_second(model, "fp32", device, args.steps, args.batch_size, args.max_len, work / "fp32")
        bf16 = steps_per_second(model, "bf16", device, args.steps, args.batch_size, args.max_len, work / "bf16")
        print(f"| {name} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x |", flush=True)
    print()


def sweep_table(model: str, rehearse: bool, args: argparse.Namespace, work: Path) -> None:
    from rayjobs.tuning import resources
    from rayjobs.tuning.driver import make_tuner
    from rayjobs.tuning.spec import SweepSpec

    cpus = os.cpu_count() or 1
    resources.connect(resources.LOCAL, num_cpus=cpus, num_gpus=1)  # one GPU, whatever the machine has
    print(f"a sweep of {args.trials} trials ({args.trial_steps} steps, batch {args.batch_size}, bf16 autocast) on one GPU, {cpus} CPUs")
    print()
    print("| GPU a trial | trials at once | wall (s) | trials / hour | training steps/s over the sweep | speed-up vs 1 GPU a trial |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for gpus in GPUS_PER_TRIAL:
        at_once = int(round(1 / gpus))
        spec = SweepSpec.load("smoke").replace(
            name=f"gpu{gpus:g}",
            grid={"method": ["simcse"], "rr_coef": [0.0], "rr_schedule": ["always"], "seed": list(range(args.trials))},
            train={
                "model": model,
                "max_steps": args.trial_steps,
                "eval_every": args.trial_steps,
                "batch_size": args.batch_size,
                "max_len": args.max_len,
                "probe_size": 256,
                "final_tasks": ["stsb"],
                "log_every": 10_000,
                "precision": "fp32" if rehearse else "bf16",
            },
            cpus_per_trial=float(max(1, min(4, cpus // at_once))),
            gpus_per_trial=gpus,
            allow_cpu_on_gpu=rehearse,
            max_concurrent=None,
            max_failures=0,
            keep_best_checkpoint=False,
        )
        spec.validate()
        storage = work / f"ray-{gpus:g}"
        started = time.perf_counter()
        grid = make_tuner(spec, storage, storage / spec.name).fit()
        wall = time.perf_counter() - started
        if grid.errors or not all((r.metrics or {}).get("kind") == "final" for r in grid):
            raise SystemExit(f"bench_gpu: the sweep at {gpus:g} GPU a trial had failed trials: {grid.errors}")
        base = base or wall
        rate = args.trials * args.trial_steps / wall
        print(f"| {gpus:g} | {at_once} | {wall:.1f} | {3600 * args.trials / wall:.0f} | {rate:.1f} | {base / wall:.2f}x |", flush=True)
    print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="timed training steps per precision and encoder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--trials", type=int, default=4, help="trials of each sweep (a multiple of 4 fills every setting)")
    p.add_argument("--trial-steps", type=int, default=200, help="training steps of each sweep trial")
    p.add_argument("--rehearse-on-cpu", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    args = p.parse_args()
    if args.rehearse_on_cpu:
        device, shapes = "cpu", TINY
        args.steps, args.batch_size, args.trials, args.trial_steps = 4, 8, 2, 4
    elif not torch.cuda.is_available():
        print(
            f"bench_gpu: error: torch {torch.__version__} sees no CUDA device; run it on a GPU machine with a CUDA build of torch "
            "(--rehearse-on-cpu only checks the script)",
            file=sys.stderr,
        )
        return 2
    else:
        device, shapes = "cuda", SHAPES
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
        print()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        precision_table(shapes, device, args, work)
        minilm = build_encoder(work / "sweep-model", *next(iter(shapes.values())))
        sweep_table(minilm, args.rehearse_on_cpu, args, work)
        if args.rehearse_on_cpu:
            print("rehearsal on the CPU: these numbers measure nothing; run it on a GPU machine")
        return 0
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
