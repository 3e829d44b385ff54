"""Aggregator scale: synthetic trial folders in the sweep's on-disk layout, aggregated in a child process.

    python bench/bench_aggregate.py                  # 1,000 trials x 500 evaluations (goal: < 60 s, < 4 GB)
    python bench/bench_aggregate.py --trials 50 --steps 100

Each synthetic trial folder is what ``rayjobs/sweep.py`` writes: Tune's ``params.json`` and
``result.json`` (every report, with Tune's own fields) and the trainer's ``run/`` folder
(``config.json``, ``metrics.jsonl`` with every key the trainer records, ``final.json``). The rank
and STS-B dev series rise and fall around a random peak. The aggregation runs as
``python -m rayjobs.aggregate`` in a child process, so its peak memory is measured alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("simcse", "esimcse", "mixcse", "infocse", "promptbert")
RR = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5)
STS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")


def write_trial(root: Path, index: int, cell: dict, steps: int, rng: np.random.Generator) -> None:
    trial_id = f"bench_{index:05d}"
    folder = root / f"{trial_id}_{cell['method']}_rr{cell['rr_coef']:g}_always_seed{cell['seed']}"
    (folder / "run").mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(cell))
    t = np.arange(steps) * 125
    peak = rng.uniform(0.1, 0.5) * t[-1]
    rank = np.where(t <= peak, 30 + 0.01 * t, 30 + 0.01 * peak - 0.004 * (t - peak)) + rng.normal(0, 0.3, steps)
    dev = 0.7 + 0.1 * np.tanh(t / (0.6 * t[-1])) + rng.normal(0, 0.003, steps)
    metrics, results = [], []
    for i, step in enumerate(t):
        record = {
            "step": int(step),
            "epoch": step / 15625,
            "lr": 3e-5 * (1 - step / (t[-1] + 1)),
            "train_seconds": 0.1 * step,
            "eval_seconds": 4.0,
            "loss/total": 0.1,
            "loss/rr": 0.01,
            "rr/entropy": 3.1,
            "rr/coef": cell["rr_coef"],
            "rr/switch_step": None,
            "batch/erank_vne": 20.0,
            "batch/energy_rank_99": 50.0,
            "loss/cl": 0.09,
            "probe/energy_rank_90": rank[i] * 2,
            "probe/energy_rank_95": rank[i] * 3,
            "probe/energy_rank_99": rank[i] * 5,
            "probe/erank_vne": rank[i],
            "probe/erank_sv": rank[i] * 4,
            "probe/numerical_rank": 768.0,
            "probe/stable_rank": 3.0,
            "probe/centered/energy_rank_99": rank[i] * 6,
            "probe/centered/erank_vne": rank[i] * 2,
            "alignment": 0.2,
            "uniformity": -2.3,
            "stsb_dev": dev[i],
            "stsb_dev_pearson": dev[i] - 0.02,
            "best/step": int(step),
            "best/stsb_dev": float(dev[: i + 1].max()),
            "phase_online": 1,
        }
        metrics.append(json.dumps(record))
        tune_row = {
            **record,
            "phase": 1,
            "kind": "eval",
            "timestamp": 1796156859 + i,
            "checkpoint_dir_name": f"checkpoint_{i:06d}",
            "should_checkpoint": True,
            "done": False,
            "training_iteration": i + 1,
            "trial_id": trial_id,
            "date": "2026-12-01_20-27-39",
            "time_this_iter_s": 12.5,
            "time_total_s": 12.5 * (i + 1),
            "pid": 1,
            "hostname": "node",
            "node_ip": "10.0.0.1",
            "config": cell,
            "time_since_restore": 12.5 * (i + 1),
            "iterations_since_restore": i + 1,
        }
        results.append(json.dumps(tune_row))
    final = {k: float(0.75 + rng.normal(0, 0.01)) for k in STS}
    final.update(
        avg=float(np.mean(list(final.values()))),
        best_step=int(t[np.argmax(dev[1:]) + 1]),
        best_stsb_dev=float(dev[1:].max()),
        steps=int(t[-1]),
        train_seconds=1000.0,
    )
    results.append(json.dumps({"step": int(t[-1]), "kind": "final", "trial_id": trial_id, **{f"final/{k}": v for k, v in final.items()}}))
    (folder / "run" / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
    (folder / "result.json").write_text("\n".join(results) + "\n")
    (folder / "run" / "config.json").write_text(
        json.dumps({**cell, "model": "bert-base-uncased", "eval_every": 125, "phase_metric": "erank_vne"})
    )
    (folder / "run" / "final.json").write_text(json.dumps(final))


def generate(root: Path, trials: int, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / ".rankcse").mkdir(parents=True)
    grid = {
        "method": list(METHODS),
        "rr_coef": list(RR),
        "rr_schedule": ["always"],
        "seed": list(range(-(-trials // (len(METHODS) * len(RR))))),
    }
    (root / ".rankcse" / "sweep.json").write_text(
        json.dumps({"spec": {"name": root.name, "grid": grid, "train": {"model": "bert-base-uncased"}}})
    )
    for i in range(trials):
        cell = {
            "method": METHODS[i % len(METHODS)],
            "rr_coef": RR[(i // len(METHODS)) % len(RR)],
            "rr_schedule": "always",
            "seed": i // (len(METHODS) * len(RR)),
        }
        write_trial(root, i, cell, steps, rng)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--steps", type=int, default=500, help="evaluations per trial")
    p.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-aggregate-"))
    exp = work / "bench"
    try:
        started = time.perf_counter()
        generate(exp, args.trials, args.steps)
        gen_seconds = time.perf_counter() - started
        size = sum(f.stat().st_size for f in exp.rglob("*") if f.is_file())
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "rayjobs.aggregate", str(exp), "--output-dir", str(work / "out")], capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"aggregation failed:\n{proc.stderr[-3000:]}")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
        tables = {f.stem: f.stat().st_size for f in (work / "out").glob("*.parquet")}
        print(f"generated {args.trials} trials x {args.steps} evaluations ({size / 1e9:.2f} GB of JSON) in {gen_seconds:.0f} s")
        print()
        print("| trials | evaluations each | step rows | aggregation wall (s) | peak memory (GB) | goal |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| {args.trials} | {args.steps} | {args.trials * args.steps:,} | {seconds:.1f} | {peak_gb:.2f} | < 60 s, < 4 GB |")
        print()
        print("tables: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(tables.items())))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
