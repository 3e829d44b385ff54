"""Command line: ``rankcse train``, ``rankcse eval`` (and ``probe``, ``transfer`` from :mod:`rankcse.cli_probe`, ``export``;
``aggregate`` from rayjobs, registered through the ``rankcse.commands`` entry point).

Every failure caused by input (a bad flag value, a missing file, a diverged loss) prints one line
``rankcse: error: ...`` naming the fix and exits with status 2; a run whose representation collapsed
(:mod:`rankcse.collapse`) stops with such a line and exit status 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankcse import cli_probe, export
from rankcse.config import STS_TASKS, TrainConfig, parse_override
from rankcse.errors import ConfigError, RankCSEError
from rankcse.names import SENTEVAL_NAMES

# flag -> TrainConfig field, for `rankcse train`
TRAIN_FLAGS: dict[str, tuple[str, type, str]] = {
    "--method": ("method", str, "contrastive method: simcse, esimcse, mixcse, infocse or promptbert"),
    "--model": ("model", str, "Hugging Face model name or folder; 'default' = packaged all-MiniLM-L6-v2"),
    "--pooler": ("pooler", str, "cls (MLP head while training) | cls_before_pooler | mean"),
    "--max-steps": ("max_steps", int, "stop after this many optimisation steps (default: whole epochs)"),
    "--epochs": ("epochs", int, "epochs over the corpus (default: the method's recipe)"),
    "--eval-every": ("eval_every", int, "evaluate on STS-B dev every K steps (and at step 0 and the end)"),
    "--seed": ("seed", int, "seed of data order, dropout and head initialisation"),
    "--rr-coef": ("rr_coef", float, "rank-reduction coefficient; 0 = off"),
    "--rr-kind": ("rr_kind", str, "RR entropy: vne (eigenvalues, default) | sv (singular values)"),
    "--rr-on": ("rr_on", str, "RR representation: z1_post_mlp | z1_pre_mlp | both_views"),
    "--rr-schedule": ("rr_schedule", str, "always | from_step:N | warmup:N | after_peak"),
    "--batch-size": ("batch_size", int, "sentences per batch (default: the method's recipe)"),
    "--learning-rate": ("learning_rate", float, "peak learning rate (default: the method's recipe)"),
    "--max-len": ("max_len", int, "maximum tokens per training sentence"),
    "--temperature": ("temperature", float, "InfoNCE temperature"),
    "--train-file": ("train_file", str, "plain-text corpus, one sentence a line (default: packaged corpus)"),
    "--train-dataset": ("train_dataset", str, "Hugging Face dataset 'name[:config][@split][#column]'"),
    "--max-train-sentences": ("max_train_sentences", int, "use only the first N corpus sentences"),
    "--data-dir": ("data_dir", str, "SentEval data folder (default: packaged copy)"),
    "--probe-size": ("probe_size", int, "sentences of STS-B dev in the per-step probe set (default: all 3,000)"),
    "--eval-batch-size": ("eval_batch_size", int, "sentences per batch when embedding for evaluation"),
    "--device": ("device", str, "auto | cpu | cuda | cuda:N"),
    "--precision": ("precision", str, "auto | fp32 | bf16 | fp16 (autocast on CUDA)"),
    "--num-threads": ("num_threads", int, "torch CPU threads"),
    "--log-every": ("log_every", int, "progress line every N steps"),
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run",
        description="Train one run; writes metrics.jsonl, final.json and the best checkpoint to --output-dir.",
    )
    for flag, (dest, typ, help_text) in TRAIN_FLAGS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_text)
    p.add_argument(
        "--final-tasks",
        nargs="*",
        default=None,
        metavar="TASK",
        help=f"test tasks after training (default: all of {' '.join(STS_TASKS)}; none to skip)",
    )
    p.add_argument("--config", type=Path, help="YAML file of settings (flags override it)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. --set method_args.dup_rate=0.3 (repeatable)",
    )
    p.add_argument("--output-dir", help="where results go (default: runs/<method>-rr<coef>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.add_argument("--quiet", action="store_true", help="only warnings and the final summary")
    cli_probe.add_train_probing_flags(p)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="STS evaluation of a model or checkpoint",
        description="SentEval-compatible STS evaluation (cosine, Spearman; STS12-16 'all', STS-B and SICK-R test).",
    )
    p.add_argument(
        "--model", default="default", help="checkpoint folder, Hugging Face model folder or name (default: packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--pooler", default=None, help="cls | cls_before_pooler | mean (default: the checkpoint's, or cls_before_pooler)")
    p.add_argument("--tasks", nargs="+", default=list(STS_TASKS), metavar="TASK", help=f"tasks (default: {' '.join(STS_TASKS)})")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split of STS-B and SICK-R")
    p.add_argument("--data-dir", default=None, help="SentEval data folder (default: packaged copy)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object (scores as fractions) instead of the table")
    p.add_argument("--details", action="store_true", help="with --json: include per-subset scores and all aggregates")


#: Entry-point group through which other packages add subcommands (rayjobs adds ``aggregate``), so the
#: core never imports them: ``register(subparsers) -> (name, handler)``.
PLUGIN_GROUP = "rankcse.commands"


def _add_plugin_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    from importlib.metadata import entry_points

    handlers = {}
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        name, handler = entry.load()(sub)
        handlers[name] = handler
    return handlers


def build_parser() -> argparse.ArgumentParser:
    """The ``rankcse`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="rankcse", description="Representation-rank analysis of contrastive sentence-embedding fine-tuning."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    cli_probe.add_commands(sub)
    export.add_commands(sub)
    COMMANDS.update(_add_plugin_commands(sub))
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Settings from --config, then flags, then --set overrides."""
    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides: dict[str, Any] = {dest: getattr(args, dest) for _, (dest, _, _) in TRAIN_FLAGS.items() if getattr(args, dest) is not None}
    if args.final_tasks is not None:
        overrides["final_tasks"] = [t for t in args.final_tasks if t != "none"]
    overrides.update(cli_probe.probing_overrides(args))
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    return cfg.with_overrides(overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """``rankcse train``."""
    from rankcse.evaluation.final import format_scores
    from rankcse.train import run

    cfg = config_from_args(args)
    if args.output_dir is not None and not args.output_dir.strip():
        raise ConfigError("--output-dir is empty; pass a folder (or omit it for runs/<method>-rr<coef>-seed<seed>)")
    out = Path(args.output_dir) if args.output_dir is not None else Path("runs") / f"{cfg.method}-rr{cfg.rr_coef:g}-seed{cfg.seed}"
    result = run(cfg, out, resume=args.resume, overwrite=args.overwrite)
    final = result.final or {}
    print(f"best step {result.best_step}: stsb_dev {100 * (result.best_stsb_dev or float('nan')):.2f}")
    if final.get("no_improvement"):
        start = 100 * (final.get("pretrained_stsb_dev") or float("nan"))
        print(
            f"no improvement: no trained evaluation beat the pre-trained model (stsb_dev {start:.2f} at step 0); "
            "the test scores are of a worse model"
        )
    scores = {k: final[k] for k in STS_TASKS if k in final}
    if scores:
        print(f"test: {format_scores(scores, final.get('avg'))}")
    print(
        f"results: {result.output_dir}/metrics.jsonl (per evaluation), "
        f"{result.output_dir}/final.json (test scores), {result.output_dir}/best (checkpoint)"
    )
    return 0


def format_table(scores: dict[str, float], avg: float) -> str:
    """SimCSE-style table of scores ×100."""
    header = [SENTEVAL_NAMES.get(k, k) for k in scores] + ["Avg."]
    row = [f"{100 * v:.2f}" for v in scores.values()] + [f"{100 * avg:.2f}"]
    widths = [max(len(h), len(r)) for h, r in zip(header, row)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line, fmt(header), line, fmt(row), line])


def cmd_eval(args: argparse.Namespace) -> int:
    """``rankcse eval``."""
    from rankcse.build import load_for_eval
    from rankcse.evaluation.sts import evaluate_sts
    from rankcse.train import pick_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    method = load_for_eval(args.model, args.pooler).to(pick_device(args.device))
    result = evaluate_sts(lambda s: method.embed(s, args.batch_size), args.tasks, args.data_dir, args.split)
    if args.json:
        payload: dict[str, Any] = {
            **result["scores"],
            "avg": result["avg"],
            "model": args.model,
            "representation": method.eval_representation,
            "split": args.split,
        }
        if args.details:
            payload["details"] = result["tasks"]
        print(json.dumps(payload, sort_keys=False))
    else:
        print(f"model: {args.model} | representation: {method.eval_representation} | STS-B/SICK-R split: {args.split}")
        print(format_table(result["scores"], result["avg"]))
    return 0


COMMANDS: dict[str, Any] = {"train": cmd_train, "eval": cmd_eval, **cli_probe.COMMANDS, **export.COMMANDS}


def _retry_hint(args: argparse.Namespace) -> str:
    """How to go on after a file error: --resume only where a run has a resume checkpoint to continue from."""
    from rankcse import checkpoint as ckpt

    fix = "free space or fix the permissions"
    if args.command == "train" and args.output_dir and args.output_dir.strip():
        try:
            resumable = ckpt.find_complete(Path(args.output_dir).expanduser() / "last") is not None
        except OSError:
            resumable = False
        if resumable:
            return f"{fix}, then run the same command with --resume"
    return f"{fix}, then run the command again"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rankcse`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except RankCSEError as exc:
        print(f"rankcse: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except OSError as exc:  # a file that could not be written or read (disk full, permissions, file-size limit)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"rankcse: error: could not access{where} ({exc.strerror or exc}); {_retry_hint(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rankcse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
