"""Benchmark of the training core against a bare PyTorch SimCSE loop, in one run.

Prints three tables:
1. training steps/s of the core (its per-step extras: batch rank metrics, RR entropy, step log)
   against a bare SimCSE loop written below (same model, batch, length, data, threads), as a ratio;
   rounds alternate between the two so drift hits both alike;
2. the cost of one evaluation (probe-set rank metrics, alignment, uniformity, STS-B dev) as a share
   of the training time between two evaluations at ``--eval-every``;
3. the wall time of the full STS suite (STS12-16, STS-B test, SICK-R test) on the default model.

Usage: python bench/bench_core.py [--steps 20 --rounds 3 --batch-size 64 --max-len 32 --threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from rankcse.config import TrainConfig
from rankcse.corpus import iterate_batches, load_corpus
from rankcse.evaluation.sts import TASKS, evaluate_sts, resolve_data_dir
from rankcse.paths import resolve_model
from rankcse.train import Trainer


class BareSimCSE:
    """The reference: unsupervised SimCSE in plain PyTorch + transformers, nothing else."""

    def __init__(self, batch_size: int, max_len: int, lr: float = 3e-5, total_steps: int = 10_000, seed: int = 0) -> None:
        torch.manual_seed(seed)
        path = resolve_model("default")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, add_pooling_layer=False)
        dim = self.model.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Tanh())
        params = list(self.model.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: max(0.0, 1 - s / total_steps))
        self.max_len = max_len
        self.model.train()

    def step(self, sentences: list[str]) -> float:
        tok = self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        batch = {k: torch.cat([v, v]) for k, v in tok.items()}
        cls = self.model(**batch).last_hidden_state[:, 0]
        z = self.head(cls)
        n = len(sentences)
        logits = F.normalize(z[:n], dim=-1) @ F.normalize(z[n:], dim=-1).T / 0.05
        loss = F.cross_entropy(logits, torch.arange(n))
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def timed_steps(step_fn, batches: list[list[str]]) -> float:
    """Steps per second over ``batches`` (after they were tokenized and run once as warm-up)."""
    start = time.perf_counter()
    for b in batches:
        step_fn(b)
    return len(batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=125)
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--skip-sts", action="store_true", help="skip the full STS suite timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus = load_corpus()
    needed = (args.rounds * args.steps + 2) * 2
    batches = [s for _, s in iterate_batches(corpus, args.batch_size, seed=0, epoch=0)][:needed]

    bare = BareSimCSE(args.batch_size, args.max_len)
    out = Path(tempfile.mkdtemp(prefix="bench_core_"))
    trainers = {}
    for name, coef in (("core", 0.0), ("core+RR", 0.1)):
        cfg = TrainConfig(
            batch_size=args.batch_size, max_len=args.max_len, rr_coef=coef, final_tasks=[], num_threads=args.threads, max_steps=10_000
        )
        trainers[name] = Trainer(cfg, out / name)
    handles = {name: open(out / f"{name}.jsonl", "w") for name in trainers}

    def core_step(name: str):
        tr = trainers[name]

        def fn(sentences: list[str]) -> None:
            tr._train_step(sentences, tr.state.batch_in_epoch, handles[name])

        return fn

    contenders = {"bare SimCSE loop": bare.step, "core": core_step("core"), "core+RR": core_step("core+RR")}
    for fn in contenders.values():  # warm-up
        fn(batches[0])
        fn(batches[1])
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    cursor = 2
    for _ in range(args.rounds):
        chunk = batches[cursor : cursor + args.steps]
        cursor += args.steps
        for name, fn in contenders.items():
            rates[name].append(timed_steps(fn, chunk))

    ref = statistics.median(rates["bare SimCSE loop"])
    print(
        f"\n## Training speed (batch {args.batch_size}, max_len {args.max_len}, "
        f"{args.threads} threads, {args.rounds} rounds x {args.steps} steps, median)"
    )
    print("| loop | steps/s | ratio to bare loop |")
    print("| --- | ---: | ---: |")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} | {med / ref:.3f} |")

    trainer = trainers["core"]
    times = []
    for _ in range(args.eval_repeats):
        start = time.perf_counter()
        trainer.evaluator(lambda s: trainer.method.embed(s, trainer.cfg.eval_batch_size))
        times.append(time.perf_counter() - start)
    eval_s = statistics.median(times)
    core_rate = statistics.median(rates["core"])
    train_s = args.eval_every / core_rate
    print(
        f"\n## Per-evaluation cost (probe set: {trainer.evaluator.num_sentences} "
        f"STS-B dev sentences, {len(trainer.evaluator.unique)} distinct)"
    )
    print("| one evaluation (s) | training between evals (s) | eval share of training time |")
    print("| ---: | ---: | ---: |")
    print(f"| {eval_s:.2f} | {train_s:.1f} (eval every {args.eval_every}) | {100 * eval_s / (train_s + eval_s):.2f} % |")

    if not args.skip_sts:
        method = trainer.method
        start = time.perf_counter()
        result = evaluate_sts(lambda s: method.embed(s, 128))
        wall = time.perf_counter() - start
        print("\n## Full STS suite on the default model (cls_before_pooler, untrained)")
        print("| tasks | distinct sentences embedded | wall time (s) | sentences/s | avg Spearman x100 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        root = resolve_data_dir(None)
        distinct = {s for task in TASKS.values() for p in task.read(root) for s in (*p.sent1, *p.sent2)}
        print(f"| {', '.join(result['scores'])} | {len(distinct)} | {wall:.1f} | {len(distinct) / wall:.0f} | {100 * result['avg']:.2f} |")
    for h in handles.values():
        h.close()
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
