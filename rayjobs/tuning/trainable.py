"""One Tune trial: a rankcse training run whose evaluations are reported to Ray Tune.

The run folder lives inside the trial's folder on the storage path (``<trial>/run``): metrics,
resume state and the best checkpoint survive a failed attempt, a lost worker and a dead driver.
Each report that follows a saved resume state carries a small Tune checkpoint pointing at it, so
Tune knows where every trial stands; the heavy state is written once, by the trainer, not copied
again by Tune. The last report of a finished trial carries a ``done`` checkpoint.

A run whose representation collapses (:class:`rankcse.errors.TrainingCollapsed`) ends the trial at once with
a terminal ``final`` report marked ``final/collapsed``: Tune has no error type it does not retry, and a
retry would only collapse again. The aggregator lists such a trial as ``collapsed`` (from ``run/final.json``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from rankcse.errors import TrainingCollapsed
from rankcse.io import FINAL_FILE
from rankcse.names import PRIMARY, STS_TASKS
from rankcse.train import run
from rayjobs.layout import cell_label
from rayjobs.ray_compat import CHECKPOINT_LOGGER, trial_folder
from rayjobs.tuning.devices import trial_device
from rayjobs.tuning.spec import Fault, SweepSpec

RUN_DIR = "run"
POINTER_FILE = "rankcse_checkpoint.json"
FAULT_COUNT_FILE = "injected_faults.json"
#: Shown first, so Tune's status table (which picks the first few metrics) shows these.
HEADLINE = ("step", PRIMARY.name, "probe/erank_vne", "probe/energy_rank_99")
FINAL_KEYS = (*STS_TASKS, "avg", "best_step", PRIMARY.best, "train_seconds", "collapsed", "no_improvement")

log = logging.getLogger("rayjobs")


class InjectedFault(RuntimeError):
    """The failure ``--inject-fault`` asked for."""


def trial_dirname(trial: Any) -> str:
    """Folder name of a trial: its id and grid cell, e.g. ``a1b2c_00003_simcse_rr0.1_always_seed1``."""
    return f"{trial.trial_id}_{cell_label(dict(trial.config))}"


def _write_pointer(folder: Path, payload: dict[str, Any]) -> tune.Checkpoint:
    (folder / POINTER_FILE).write_text(json.dumps(payload, sort_keys=True))
    return tune.Checkpoint.from_directory(str(folder))


def _report(metrics: dict[str, Any], pointer: dict[str, Any] | None) -> None:
    metrics["node_id"] = _node_id()  # which node ran this attempt: Tune's own rows show only the IP, shared by the fake nodes
    if pointer is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="rankcse-ckpt-") as folder:
        tune.report(metrics, checkpoint=_write_pointer(Path(folder), pointer))


class TuneReporter:
    """The trainer's ``report`` callback: every evaluation record goes to Tune (plus the injected fault, if any)."""

    def __init__(self, run_dir: Path, fault: Fault | None) -> None:
        self.run_dir = run_dir
        self.fault = fault

    def __call__(self, record: dict[str, Any], saved: Path | None) -> None:
        metrics = {k: record.get(k) for k in HEADLINE}
        metrics.update(record)
        metrics["phase"] = record.get("phase_online")
        metrics["kind"] = "eval"
        pointer = {"run_dir": str(self.run_dir), "resume": str(saved), "step": record["step"], "done": False} if saved else None
        _report(metrics, pointer)
        if self.fault is not None and record["step"] >= self.fault.at_step:
            self._maybe_fail(record["step"])

    def _maybe_fail(self, step: int) -> None:
        counter = self.run_dir.parent / FAULT_COUNT_FILE
        done = json.loads(counter.read_text())["count"] if counter.is_file() else 0
        if self.fault.times and done >= self.fault.times:
            return
        counter.write_text(json.dumps({"count": done + 1}))
        raise InjectedFault(f"injected fault at step {step} (attempt {done + 1}; --inject-fault)")


def _node_id() -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def _configure_logging(verbose: bool) -> None:
    logger = logging.getLogger("rankcse")
    if verbose and not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(CHECKPOINT_LOGGER).setLevel(logging.WARNING)  # "Checkpoint successfully created" per report


def train_trial(config: dict[str, Any], sweep: dict[str, Any], trial_logs: bool = False) -> None:
    """Tune function trainable: train (or resume, or skip if finished) the trial's run, reporting each evaluation.

    ``config`` is the trial's grid cell (Tune's param space holds only the axes); ``sweep`` the
    sweep's spec (:meth:`SweepSpec.to_dict`), passed with ``tune.with_parameters``.
    """
    spec = SweepSpec.from_dict(sweep)
    cell = {axis: config[axis] for axis in spec.axes()}
    _configure_logging(trial_logs)
    trial_dir = trial_folder()
    run_dir = trial_dir / RUN_DIR
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None and _pointer(checkpoint).get("done"):
        return  # finished before the driver stopped; Tune's restore hands it back (see sweep.py)
    final_file = run_dir / FINAL_FILE
    if final_file.is_file():
        final = json.loads(final_file.read_text())  # finished, but the last report was lost with the driver
    else:
        cfg = spec.trial_config(cell)
        device = trial_device(spec.gpus_per_trial, spec.allow_cpu_on_gpu)  # fails here, before loading anything, without CUDA
        if device is not None:
            log.warning("holding %g GPU without CUDA: training on %s (--allow-cpu-on-gpu)", spec.gpus_per_trial, device)
            cfg = cfg.with_overrides({"device": device})
        fault = spec.fault if spec.fault and spec.fault.matches(cell) else None
        # resume=True continues from run/last when an earlier attempt saved one, and starts afresh otherwise.
        try:
            final = run(cfg, run_dir, report=TuneReporter(run_dir, fault), resume=True).final or {}
        except TrainingCollapsed as exc:
            log.error("trial %s: %s", cell_label(cell), exc)
            final = json.loads(final_file.read_text())  # the trainer recorded the collapse there
    _finish(run_dir, final, keep_best=spec.keep_best_checkpoint)


def _pointer(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    try:
        with checkpoint.as_directory() as folder:
            return json.loads((Path(folder) / POINTER_FILE).read_text())
    except (OSError, ValueError):
        return {}  # a checkpoint an older state refers to may be gone; the run folder still knows the state


def _finish(run_dir: Path, final: dict[str, Any], keep_best: bool) -> None:
    """Report the test scores of the best checkpoint, then drop the resume state (and the best model unless kept)."""
    metrics: dict[str, Any] = {"step": final.get("steps"), "kind": "final"}
    metrics.update({f"final/{k}": final.get(k) for k in FINAL_KEYS if k in final})
    metrics.update({f"final/{k}": v for k, v in final.items() if isinstance(v, (int, float)) and "/" in k})
    _report(metrics, {"run_dir": str(run_dir), "final": str(run_dir / FINAL_FILE), "done": True, "step": final.get("steps")})
    shutil.rmtree(run_dir / "last", ignore_errors=True)
    if not keep_best:
        shutil.rmtree(run_dir / "best", ignore_errors=True)
