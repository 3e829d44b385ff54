"""Benchmark of in-training probing against the rest of one evaluation and against training, in one run.

Measures on the default model (packaged all-MiniLM-L6-v2, the training representation of a default
run), all with the same threads:

1. the probing suite at the in-training (``fast``) setting, split into embedding and classifier time;
2. one evaluation's other metrics (the :class:`StepEvaluator`: probe-set rank metrics, alignment,
   uniformity, STS-B dev);
3. one training step of the core loop (batch 64, max_len 32 by default),

and prints the probe's cost as a share of training time at the default cadence (every
``probing_every_evals`` evaluations of ``eval_every`` steps) and at other cadences. Goal: under 10 %
at the default cadence. Rounds alternate so that load drift hits every part alike; medians are shown.

Usage: python bench/bench_probing.py [--tasks generated --rounds 3 --steps 10 --threads 2 --eval-every 125]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rankcse.config import TrainConfig
from rankcse.corpus import iterate_batches, load_corpus
from rankcse.evaluation.probing import FAST, TrainingProbe
from rankcse.train import Trainer


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["generated"], help="probing tasks (default: the generated surrogates)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument(
        "--every-evals", type=int, default=defaults.probing_every_evals, help="probing cadence to judge (default: the config default)"
    )
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(tempfile.mkdtemp(prefix="bench_probing_"))
    cfg = TrainConfig(
        model=args.model, batch_size=args.batch_size, max_len=args.max_len, final_tasks=[], num_threads=args.threads, max_steps=10_000
    )
    trainer = Trainer(cfg, out / "run")
    started = time.perf_counter()
    probe = TrainingProbe(args.tasks, args.every_evals, args.eval_every)
    setup_s = time.perf_counter() - started
    embed = lambda s: trainer.method.embed(s, trainer.cfg.eval_batch_size)  # noqa: E731
    batches = [s for _, s in iterate_batches(load_corpus(), args.batch_size, seed=0, epoch=0)][: args.rounds * args.steps + 2]
    unique = sorted({s for d in probe.fast_data for split in d.splits.values() for s in split[0]})

    step_log = open(out / "steps.jsonl", "w")
    for i in range(2):  # warm-up
        trainer._train_step(batches[i], i, step_log)
    probe(embed)
    trainer.evaluator(embed)

    step_s, eval_s, probe_s, embed_s = [], [], [], []
    cursor = 2
    for _ in range(args.rounds):
        start = time.perf_counter()
        for sentences in batches[cursor : cursor + args.steps]:
            trainer._train_step(sentences, cursor, step_log)
            cursor += 1
        step_s.append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        trainer.evaluator(embed)
        eval_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        probe(embed)
        probe_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asarray(embed(unique))
        embed_s.append(time.perf_counter() - start)
    step_log.close()

    step, ev, pr, em = (statistics.median(x) for x in (step_s, eval_s, probe_s, embed_s))
    sizes = {d.spec.key: d.sizes() for d in probe.fast_data}
    print(
        f"\n## In-training probing (fast setting: <= {FAST.max_train}/{FAST.max_valid}/{FAST.max_test} "
        f"train/valid/test per task, C in {FAST.c_grid}; {args.threads} threads, {args.rounds} rounds, median)"
    )
    listed = ", ".join(f"{k} {v['train']}/{v['valid']}/{v['test']}" for k, v in sizes.items())
    print(f"tasks: {listed}; {len(unique)} distinct sentences; task set-up once per run: {setup_s:.1f}s")
    print("| part | seconds |")
    print("| --- | ---: |")
    print(f"| probing suite (fast) | {pr:.2f} |")
    print(f"|   of which embedding | {em:.2f} |")
    print(f"|   of which classifiers | {max(0.0, pr - em):.2f} |")
    print(f"| evaluation without probing (StepEvaluator, {len(trainer.evaluator.unique)} distinct sentences) | {ev:.2f} |")
    print(f"| one training step (batch {args.batch_size}, max_len {args.max_len}) | {step:.3f} |")
    print(f"\nprobing suite / one evaluation's other metrics: {pr / ev:.2f}x")
    print(f"\n## Probing share of training time (eval every {args.eval_every} steps)")
    print(
        "| probe every N evaluations | training between probes (s) | probe share "
        "of training time | probe share of run time (training + evals + probes) |"
    )
    print("| ---: | ---: | ---: | ---: |")
    for every in sorted({1, 2, args.every_evals, 8}):
        if every < 1:
            continue
        train = every * args.eval_every * step
        total = train + every * ev + pr
        mark = " (default)" if every == args.every_evals else ""
        print(f"| {every}{mark} | {train:.1f} | {100 * pr / train:.1f} % | {100 * pr / total:.1f} % |")
    share = pr / (max(args.every_evals, 1) * args.eval_every * step)
    verdict = "meets" if share < 0.10 else "misses"
    print(f"\nat the default cadence the probe costs {100 * share:.1f} % of training time: {verdict} the 10 % goal")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
