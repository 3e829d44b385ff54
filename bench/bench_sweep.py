"""Tune's overhead per trial: the same trials run serially through rankcse's training loop and through the sweep.

    python bench/bench_sweep.py                         # 4 trials on a tiny in-process BERT (about a minute)
    python bench/bench_sweep.py --model default --steps 20

Serial: ``rankcse.train.run`` for each grid cell, one after the other, in this process (imports
warm). Sweep: the same cells as one Tune experiment on a local Ray (one trial at a time, the same
CPU threads), with and without actor reuse. Overhead per trial = (sweep wall - serial wall) /
trials, which includes the one-off start of Tune's worker process (it imports torch and
transformers afresh); the sweep of twice the trials gives the marginal overhead of one more trial,
which is what a sweep of hundreds pays. Ray's start is paid once per sweep and reported apart.
Goal: under 1 s a trial.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rankcse.train import run
from rayjobs.tuning import resources
from rayjobs.tuning.driver import make_tuner
from rayjobs.tuning.spec import SweepSpec


def tiny_model(folder: Path) -> str:
    """A 2-layer, 64-dim BERT with the packaged tokenizer (random weights, seed 0)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankcse.paths import packaged_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="'tiny' (built here), 'default' (packaged MiniLM) or any model folder")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        model = tiny_model(work / "tiny") if args.model == "tiny" else args.model
        spec = SweepSpec.load("smoke").replace(
            name="bench",
            grid={"method": ["simcse"], "rr_coef": [0.0, 0.1], "rr_schedule": ["always"], "seed": list(range(args.seeds))},
            train={
                "model": model,
                "max_steps": args.steps,
                "eval_every": max(1, args.steps // 4),
                "batch_size": 32,
                "probe_size": 200,
                "final_tasks": ["stsb"],
                "log_every": 1000,
            },
            cpus_per_trial=float(args.threads),
            max_concurrent=1,
            max_failures=0,
        )
        double = spec.replace(grid={**spec.grid, "seed": list(range(2 * args.seeds))})
        double.validate()
        cells = spec.cells()
        run(spec.trial_config(cells[0]), work / "warmup", overwrite=True)  # file caches and lazy imports, not timed
        serial = {}
        started = time.perf_counter()
        for i, cell in enumerate(double.cells()):
            run(double.trial_config(cell), work / "serial" / str(i))
            if i + 1 == len(cells):
                serial[len(cells)] = time.perf_counter() - started
        serial[2 * len(cells)] = time.perf_counter() - started

        started = time.perf_counter()
        resources.connect(resources.LOCAL, num_cpus=args.threads)
        ray_start = time.perf_counter() - started
        rows = []
        for name, sweep_spec, reuse in (
            ("reuse_actors=True", spec, True),
            ("reuse_actors=True", double, True),
            ("reuse_actors=False", spec, False),
        ):
            storage = work / f"ray-{len(rows)}"
            started = time.perf_counter()
            grid = make_tuner(sweep_spec, storage, storage / sweep_spec.name, reuse_actors=reuse).fit()
            wall = time.perf_counter() - started
            assert not grid.errors and all((r.metrics or {}).get("kind") == "final" for r in grid), grid.errors
            rows.append((name, len(sweep_spec.cells()), wall))
        n = len(cells)
        print(f"simcse x RR {{0, 0.1}} x seeds, {args.steps} steps, model {args.model}, {args.threads} threads, one trial at a time")
        print()
        print("| path | trials | wall (s) | per trial (s) | overhead per trial vs serial (s) |")
        print("| --- | --- | --- | --- | --- |")
        for count, wall in serial.items():
            print(f"| serial rankcse.train.run | {count} | {wall:.1f} | {wall / count:.2f} | — |")
        for name, count, wall in rows:
            print(f"| Tune sweep, {name} | {count} | {wall:.1f} | {wall / count:.2f} | {(wall - serial[count]) / count:+.2f} |")
        small, large = rows[0][2], rows[1][2]
        marginal = ((large - small) - (serial[2 * n] - serial[n])) / n
        print(f"| marginal overhead of one more trial (reuse_actors=True) | — | — | — | {marginal:+.2f} |")
        print(f"| Ray start (once per sweep) | — | {ray_start:.1f} | — | — |")
        print()
        print("the sweep uses reuse_actors=False (a reused actor kept ~1 GB per finished MiniLM trial); the column shows what that costs")
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
