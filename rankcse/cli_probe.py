"""Command line for probing and transfer tasks: ``rankcse probe`` and ``rankcse transfer``.

Kept apart from :mod:`rankcse.cli`, which only registers these subcommands (``rankcse train``'s probing flags come from
:class:`rankcse.config.TrainConfig`, as all its setting flags do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rankcse.errors import ConfigError, RankCSEError


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="default", help="checkpoint folder, Hugging Face model folder or name (default: packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--pooler", default=None, help="cls | cls_before_pooler | mean (default: the checkpoint's, or cls_before_pooler)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per batch when embedding")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object (accuracies as fractions) instead of the table")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``probe`` and ``transfer``."""
    p = sub.add_parser(
        "probe",
        help="linguistic probing of a model or checkpoint",
        description="Logistic-regression probes on frozen embeddings (SentEval's probing protocol). Tasks ending in _gen are "
        "surrogates generated from raw sentences, not SentEval's data.",
    )
    _add_model_flags(p)
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help="task keys, SentEval names, 'senteval' or 'generated' (default: senteval with --data-dir, else generated)",
    )
    p.add_argument("--data-dir", default=None, help="folder holding SentEval's probing files (<dir>/probing/*.txt or <dir>/*.txt)")
    p.add_argument("--corpus", default=None, help="raw sentences, one a line, for the generated tasks (default: packaged corpus)")
    p.add_argument("--seed", type=int, default=None, help="seed of the generated tasks (default 1111)")
    p.add_argument(
        "--setting",
        default="full",
        choices=("full", "fast"),
        help="full: SentEval's (all examples, 6 C values); fast: the in-training subsample",
    )
    p.add_argument(
        "--write-generated",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the generated tasks as SentEval-format files into DIR and stop",
    )

    t = sub.add_parser(
        "transfer",
        help="SentEval transfer tasks of a model or checkpoint",
        description="SentEval transfer tasks (logistic regression, SentEval's splits and cross-validation).",
    )
    _add_model_flags(t)
    t.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="mr cr subj mpqa sst2 trec mrpc (default: all)")
    t.add_argument("--data-dir", default=None, help="SentEval data folder (default: packaged copy)")
    t.add_argument("--kfold", type=int, default=10, help="cross-validation folds (10 as SimCSE's test mode; SentEval's default is 5)")


def _embedder(args: argparse.Namespace):
    from rankcse.build import load_for_eval
    from rankcse.runtime import pick_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    method = load_for_eval(args.model, args.pooler).to(pick_device(args.device))
    return method, (lambda sentences: method.embed(sentences, args.batch_size))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def cmd_probe(args: argparse.Namespace) -> int:
    """``rankcse probe``."""
    from rankcse.evaluation.probing import PROBING_TASKS, SETTINGS, expand_tasks, load_task, score_tasks, subsample, write_probing_file
    from rankcse.evaluation.probing_gen import DEFAULT_SEED

    seed = DEFAULT_SEED if args.seed is None else args.seed
    names = args.tasks or (["senteval"] if args.data_dir else ["generated"])
    keys = expand_tasks(names)
    if args.write_generated is not None:
        written = [
            write_probing_file(load_task(k, corpus=args.corpus, seed=seed), args.write_generated / PROBING_TASKS[k].file)
            for k in keys
            if PROBING_TASKS[k].surrogate
        ]
        if not written:
            raise ConfigError("--write-generated writes generated (_gen) tasks only; pass --tasks generated")
        for path in written:
            print(path)
        return 0
    settings = SETTINGS[args.setting]
    data = [subsample(load_task(k, args.data_dir, args.corpus, seed), settings) for k in keys]
    method, embed = _embedder(args)
    results = score_tasks(embed, data, settings)
    if args.json:
        payload = {"model": args.model, "representation": method.eval_representation, "setting": settings.name}
        payload.update({f"probing/{k}": r.acc for k, r in results.items()})
        payload["details"] = {k: {**r.to_dict(), "source": d.source} for (k, r), d in zip(results.items(), data)}
        print(json.dumps(payload))
        return 0
    print(
        f"model: {args.model} | representation: {method.eval_representation} | setting: "
        f"{settings.name} | tasks ending in _gen are generated surrogates, not SentEval's"
    )
    rows = [
        [
            k,
            r.group,
            "yes" if r.surrogate else "no",
            f"{100 * r.acc:.2f}",
            f"{100 * r.dev_acc:.2f}",
            f"{100 * r.chance:.2f}",
            f"{r.c:g}",
            f"{r.n_train}/{r.n_valid}/{r.n_test}",
        ]
        for k, r in results.items()
    ]
    print(_table(["task", "group", "surrogate", "test acc", "valid acc", "chance", "C", "train/valid/test"], rows))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """``rankcse transfer``."""
    from rankcse.evaluation.transfer import TRANSFER_TASKS, check_transfer_data, evaluate_transfer, transfer_task

    tasks = [transfer_task(name).key for name in (args.tasks or list(TRANSFER_TASKS))]
    if args.kfold < 2:
        raise ConfigError(f"--kfold must be >= 2, got {args.kfold}")
    check_transfer_data(tasks, args.data_dir)
    method, embed = _embedder(args)
    results = evaluate_transfer(embed, tasks, args.data_dir, args.kfold)
    if args.json:
        payload = {"model": args.model, "representation": method.eval_representation, "kfold": args.kfold}
        payload.update({f"transfer/{k}": r["acc"] for k, r in results.items()})
        payload["details"] = results
        print(json.dumps(payload))
        return 0
    print(f"model: {args.model} | representation: {method.eval_representation} | kfold: {args.kfold}")
    header = [TRANSFER_TASKS[k].senteval_name for k in results] + ["Avg."]
    accs = [100 * r["acc"] for r in results.values()]
    print(_table(["", *header], [["test acc", *[f"{a:.2f}" for a in accs], f"{sum(accs) / len(accs):.2f}"]]))
    if "mrpc" in results:
        print(f"MRPC F1: {100 * results['mrpc']['f1']:.2f}")
    return 0


#: The library's messages name train's flags; ``rankcse probe`` has its own for the same settings.
_PROBE_FLAGS = {"--probing-data-dir": "--data-dir", "--probing-corpus": "--corpus"}


def cmd_probe_own_flags(args: argparse.Namespace) -> int:
    """``rankcse probe``, its errors naming probe's own flags."""
    try:
        return cmd_probe(args)
    except RankCSEError as exc:
        message = str(exc)
        for train_flag, own in _PROBE_FLAGS.items():
            message = message.replace(train_flag, own)
        exc.args = (message,)
        raise


COMMANDS = {"probe": cmd_probe_own_flags, "transfer": cmd_transfer}
