"""Run a sweep of rankcse trials on Ray Tune, locally or on a cluster, and aggregate the results (the driver behind rayjobs/sweep.py).

    python rayjobs/sweep.py --preset smoke                      # local Ray, CPU
    ray submit cluster.yaml rayjobs/sweep.py -- --preset paper  # on the cluster's head node
    python rayjobs/sweep.py --preset smoke --resume             # continue after the driver died

Each grid cell (method x RR coefficient x schedule x seed x any extra axis) is one Tune trial that
runs rankcse's training loop and reports every evaluation. When Tune is done the aggregator turns
the experiment folder into Parquet tables, figures and a report, and their paths are printed.
Exit status: 0 when every trial completed, 1 when some errored or are incomplete (their results
are still aggregated), 2 on bad input, 130 when interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankcse.config import parse_override
from rankcse.errors import ConfigError, RankCSEError
from rayjobs.layout import TRACKERS_FILE, cell_label, meta_dir, read_sweep_record
from rayjobs.tuning.spec import Fault, SweepSpec, preset_names

log = logging.getLogger("rayjobs")
DEFAULT_STORAGE = Path("results") / "ray"
DEFAULT_OUTPUT = Path("results")


def build_parser() -> argparse.ArgumentParser:
    """The sweep's command line."""
    p = argparse.ArgumentParser(
        prog="rayjobs/sweep.py",
        description="Sweep rankcse trials (methods x RR coefficients x seeds x ...) on Ray Tune and aggregate the results.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="smoke", help=f"named preset ({', '.join(preset_names())}) or a YAML file of the same shape")
    g = p.add_argument_group("grid (each replaces the preset's axis)")
    g.add_argument("--methods", nargs="+", metavar="M", help="methods: simcse esimcse mixcse infocse promptbert")
    g.add_argument("--rr-coefs", nargs="+", type=float, metavar="C", help="RR coefficients (0 = no RR)")
    g.add_argument("--rr-schedules", nargs="+", metavar="S", help="RR schedules: always, from_step:N, warmup:N, after_peak")
    g.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds")
    g.add_argument("--num-seeds", type=int, metavar="N", help="seeds 0..N-1 (instead of --seeds)")
    g.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=[V1,V2]",
        help="another axis over any train setting, e.g. --grid learning_rate=[1e-5,3e-5]",
    )
    t = p.add_argument_group("training (for every trial)")
    t.add_argument("--model", help="Hugging Face model name or folder ('default' = packaged all-MiniLM-L6-v2)")
    t.add_argument("--train-file", help="plain-text corpus, one sentence a line (e.g. wiki1m_for_simcse.txt)")
    t.add_argument("--train-dataset", help="Hugging Face dataset 'name[:config][@split][#column]'")
    t.add_argument("--max-steps", type=int, help="optimisation steps per trial (default: the preset's, or whole epochs)")
    t.add_argument("--epochs", type=int, help="epochs per trial (when --max-steps is unset)")
    t.add_argument("--eval-every", type=int, help="evaluate on STS-B dev every K steps")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any rankcse train setting, e.g. --set probe_size=500",
    )
    r = p.add_argument_group("resources and fault tolerance")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs a trial holds; fractions pack several trials on one GPU (e.g. 0.25)")
    r.add_argument("--cpus-per-trial", type=float, help="CPUs a trial holds (also its torch threads)")
    r.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as many as fit)")
    r.add_argument("--max-failures", type=int, help="retries of a failed trial, each from its last checkpoint")
    r.add_argument(
        "--resource-wait", type=float, default=600.0, help="seconds to wait on a cluster for the autoscaler to add a node that fits a trial"
    )
    r.add_argument(
        "--address",
        default=None,
        help="Ray address: 'local' (a fresh local Ray), 'auto', host:port; "
        "default: RAY_ADDRESS, a cluster started on this machine, else local",
    )
    r.add_argument(
        "--allow-cpu-on-gpu",
        action="store_true",
        help="a trial holding a GPU that CUDA cannot see trains on CPU instead of failing (rehearsals on fake GPUs: cluster-local.yaml)",
    )
    r.add_argument(
        "--inject-fault",
        metavar="KEY=VALUE,...:STEP[:TIMES]",
        help="make matching trials fail at STEP (TIMES attempts; 0 = always), to test fault tolerance",
    )
    o = p.add_argument_group("where things go")
    o.add_argument("--name", help="experiment name (default: the preset's name)")
    o.add_argument(
        "--storage-path", default=None, help=f"Tune's storage folder; shared by all nodes on a cluster (default: ./{DEFAULT_STORAGE})"
    )
    o.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help=f"folder for the Parquet tables, figures and report (default: ./{DEFAULT_OUTPUT}/<name>)",
    )
    o.add_argument(
        "--resume",
        action="store_true",
        help="continue the experiment <storage>/<name> after its driver stopped (finished trials are not re-run)",
    )
    o.add_argument("--retry-errored", action="store_true", help="with --resume: run errored trials again from their last checkpoint")
    o.add_argument("--overwrite", action="store_true", help="delete an existing experiment of the same name first")
    o.add_argument("--no-aggregate", action="store_true", help="skip the aggregation at the end")
    o.add_argument(
        "--keep-best-checkpoint",
        choices=("yes", "no"),
        default=None,
        help="keep each trial's best model folder (yes: needed to probe or evaluate it later)",
    )
    k = p.add_argument_group("experiment trackers (optional extras)")
    k.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial to MLflow: file:DIR (offline), sqlite:///FILE.db or http(s)://server; pip install -e '.[mlflow]'",
    )
    k.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="log every trial to this W&B project (WANDB_MODE=offline works without an account); pip install -e '.[wandb]'",
    )
    o.add_argument("--trial-logs", action="store_true", help="show each trial's training log lines, not only Tune's status table")
    o.add_argument("--dry-run", action="store_true", help="print the trials and exit")
    return p


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The preset with the command line's overrides applied."""
    spec = SweepSpec.load(args.preset)
    grid = dict(spec.grid)
    for flag, axis in (("methods", "method"), ("rr_coefs", "rr_coef"), ("rr_schedules", "rr_schedule"), ("seeds", "seed")):
        if getattr(args, flag) is not None:
            grid[axis] = list(getattr(args, flag))
    if args.num_seeds is not None:
        if args.seeds is not None:
            raise ConfigError("give --seeds or --num-seeds, not both")
        if args.num_seeds < 1:
            raise ConfigError(f"--num-seeds must be >= 1, got {args.num_seeds}")
        grid["seed"] = list(range(args.num_seeds))
    for text in args.grid:
        key, values = parse_override(text)
        grid[key] = values if isinstance(values, list) else [values]
    train = dict(spec.train)
    for flag in ("model", "train_file", "train_dataset", "max_steps", "epochs", "eval_every"):
        if getattr(args, flag) is not None:
            train[flag] = getattr(args, flag)
    if args.train_file is not None:
        train.pop("train_dataset", None)
    if args.train_dataset is not None:
        train.pop("train_file", None)
    for text in args.overrides:
        key, value = parse_override(text)
        train[key] = value
    for key in grid:  # a setting that became an axis is no longer fixed
        train.pop(key, None)
    changes: dict[str, Any] = {"grid": grid, "train": train}
    for flag in ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures", "name"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if args.keep_best_checkpoint is not None:
        changes["keep_best_checkpoint"] = args.keep_best_checkpoint == "yes"
    if args.inject_fault:
        changes["fault"] = Fault.parse(args.inject_fault)
    if args.allow_cpu_on_gpu:
        changes["allow_cpu_on_gpu"] = True
    return spec.replace(**changes)


def _experiment_paths(args: argparse.Namespace, name: str) -> tuple[Path, Path]:
    storage = args.storage_path or DEFAULT_STORAGE
    if "://" in str(storage):
        raise ConfigError(
            f"--storage-path {storage}: trials write their run folders (metrics, best checkpoints) there directly, so it must be a "
            "filesystem path; on a multi-node cluster mount shared storage (NFS, EFS, a bucket via FUSE) on every node and point there"
        )
    storage = Path(storage).expanduser().resolve()
    output = (args.output_dir or DEFAULT_OUTPUT / name).expanduser().resolve()
    _check_folder("--storage-path", storage)
    if not args.no_aggregate:
        _check_folder("--output-dir", output)
    return storage, output


def _check_folder(flag: str, folder: Path) -> None:
    """Refuse, before Ray starts, a folder that is a file or cannot be created and written where it would be."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} is a file; pass a folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{flag} {folder}: {existing} is a file; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {folder}: cannot write in {existing}; pass a folder you can write")


class _SignalToInterrupt:
    """SIGTERM is handled like Ctrl-C: Tune saves its state and stops, so --resume can continue."""

    def __enter__(self) -> _SignalToInterrupt:
        self.previous = signal.signal(signal.SIGTERM, self._forward)
        return self

    def _forward(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping the sweep as on Ctrl-C (state is saved; continue with --resume)")
        os.kill(os.getpid(), signal.SIGINT)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self.previous)


def make_tuner(
    spec: SweepSpec,
    storage: Path,
    experiment_dir: Path,
    resume: bool = False,
    retry_errored: bool = False,
    trial_logs: bool = False,
    reuse_actors: bool = False,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The Tuner of a sweep: a new one over the spec's grid (``callbacks`` added to Tune's), or the restored experiment (``resume``)."""
    from ray import tune
    from ray.tune import ResumeConfig
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rayjobs.ray_compat import restore_tuner
    from rayjobs.tuning.state import StateBackup
    from rayjobs.tuning.trainable import train_trial, trial_dirname

    # The spec travels as a parameter, not in the param space: Tune's tables and params.json show just the grid cell.
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, sweep=spec.to_dict(), trial_logs=trial_logs),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    if resume:
        # Finished trials are resumed too: the trainable returns at once for those that really finished
        # (their checkpoint says done) and continues those Tune listed as finished too early.
        resume_type = ResumeConfig.ResumeType
        config = ResumeConfig(
            finished=resume_type.RESUME, unfinished=resume_type.RESUME, errored=resume_type.RESUME if retry_errored else resume_type.SKIP
        )
        return restore_tuner(str(experiment_dir), trainable, config)  # callbacks come back from the saved Tuner
    # reuse_actors is off: a trial's process ends with it. Reused actors kept ~1 GB of resident memory per
    # finished MiniLM trial (allocator arenas of the previous model), 5 GB after 3 trials; a fresh process costs
    # about 5 s a trial (bench/bench_sweep.py).
    # The cells are listed, not crossed by grid_search: RR-off cells run once whatever the schedule (SweepSpec.cells).
    # Tune takes them as points to evaluate over a space of the axes' values, one trial each, in order.
    cells = spec.cells()
    space: dict[str, Any] = {axis: tune.choice(values) for axis, values in spec.axes().items()}
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=cells),
            num_samples=len(cells),
            max_concurrent_trials=spec.max_concurrent,
            reuse_actors=reuse_actors,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Keep every (tiny) pointer checkpoint: num_to_keep would force a state snapshot per report.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[StateBackup(experiment_dir), *callbacks],
            verbose=1,
        ),
    )


def run_sweep(args: argparse.Namespace) -> int:
    """Validate, run on Tune, aggregate; return the exit status."""
    from rayjobs.tuning import state

    if not args.resource_wait >= 0:  # also NaN
        raise ConfigError(f"--resource-wait must be >= 0 seconds, got {args.resource_wait:g}")
    spec = spec_from_args(args)
    storage, output = _experiment_paths(args, spec.name)
    experiment_dir = storage / spec.name
    if args.resume:
        if args.overwrite:
            raise ConfigError("give --resume or --overwrite, not both")
        if _grid_flags_given(args):
            raise ConfigError("--resume continues the sweep as it was started; drop the grid flags (Tune cannot change a grid mid-sweep)")
        spec = SweepSpec.from_dict(read_sweep_record(experiment_dir)["spec"])
    elif experiment_dir.exists():
        if not args.overwrite:
            raise ConfigError(f"experiment {experiment_dir} exists; pass --resume to continue it, --overwrite to replace it, or --name NEW")
    configs = spec.validate(check_files=not args.dry_run)
    spec.check_train_file()
    cells = spec.cells()
    skipped = spec.skipped_cells()
    shape = " x ".join(f"{len(v)} {k}" for k, v in spec.axes().items()) + (f", less {skipped} RR-off repeats" if skipped else "")
    print(
        f"sweep {spec.name}: {len(cells)} trials ({shape}), {spec.cpus_per_trial:g} "
        f"CPU + {spec.gpus_per_trial:g} GPU each -> {experiment_dir}",
        flush=True,
    )
    if args.mlflow or args.wandb:  # the extras, an MLflow server that answers, a W&B key: before anything is deleted or started
        from rayjobs.tuning.trackers import check

        check(args.mlflow, args.wandb)
    if args.dry_run:
        if spec.missing_train_file():
            print(f"warning: {spec.missing_train_file()} before the real run", file=sys.stderr, flush=True)
        for cell, cfg in zip(cells, configs):
            steps = cfg.max_steps or f"{cfg.epochs} epoch(s)"
            print(
                f"  {cell_label(cell)}: {cfg.model}, batch {cfg.batch_size}, lr "
                f"{cfg.learning_rate:g}, {steps} steps, eval every {cfg.eval_every}"
            )
        return 0
    from rayjobs.ray_compat import untested_ray_warning

    untested = untested_ray_warning()
    if untested:
        print(untested, file=sys.stderr, flush=True)
    if args.overwrite and experiment_dir.exists():
        shutil.rmtree(experiment_dir)
    repaired = state.prepare_resume(experiment_dir) if args.resume else []
    for line in repaired:
        log.warning("resume: %s", line)
    trackers = None  # checked and started before Ray: a missing extra is a one-line error
    if args.mlflow or args.wandb or (args.resume and (meta_dir(experiment_dir) / TRACKERS_FILE).is_file()):
        from rayjobs.tuning.trackers import Trackers

        trackers = Trackers.start(spec, experiment_dir, args.mlflow, args.wandb)

    from rayjobs.tuning import resources

    local = resources.connect(args.address)
    resources.check_resources(spec.cpus_per_trial, spec.gpus_per_trial, local, wait_seconds=args.resource_wait)
    if spec.gpus_per_trial > 0 and not spec.allow_cpu_on_gpu:
        resources.check_cuda(spec.cpus_per_trial, spec.gpus_per_trial)
    if not args.resume:
        state.write_spec(experiment_dir, {"spec": spec.to_dict(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]})
    with _SignalToInterrupt():
        callbacks = trackers.callbacks(spec, experiment_dir) if trackers else []
        grid = make_tuner(spec, storage, experiment_dir, args.resume, args.retry_errored, args.trial_logs, callbacks=callbacks).fit()
    # Judged by what the trials reported (Tune can list an interrupted trial as terminated): a trial is
    # done once it reported its final scores, or failed.
    unfinished = [r for r in grid if r.error is None and (r.metrics or {}).get("kind") != "final"]
    if unfinished:
        print(
            f"sweep interrupted; continue it with: python rayjobs/sweep.py --name {spec.name} --storage-path {storage} --resume", flush=True
        )
        return 130
    if args.no_aggregate:
        print(f"experiment: {experiment_dir}")
        return 0
    from rayjobs.analysis.aggregate import aggregate

    summary = aggregate(experiment_dir, output)
    print(summary.describe())
    expected = {cell_label(c) for c in cells}
    missing = sorted(expected - summary.completed_cells)
    if trackers is not None:
        for line in trackers.publish(spec, experiment_dir, output, ok=not missing):
            print(line, flush=True)
    if missing:
        print(f"{len(missing)} of {len(expected)} trials did not complete: {', '.join(missing)}", flush=True)
        print(f"resume with: python rayjobs/sweep.py --name {spec.name} --storage-path {storage} --resume [--retry-errored]", flush=True)
        return 1
    return 0


def _grid_flags_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, f) is not None for f in ("methods", "rr_coefs", "rr_schedules", "seeds", "num_seeds")) or bool(args.grid)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors caused by input print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    try:
        return run_sweep(args)
    except RankCSEError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
