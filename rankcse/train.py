"""The training loop: one run of one method, with rank tracking, RR, evaluation and checkpoints.

``run(cfg, output_dir, report=...)`` trains, evaluates every ``eval_every`` steps (and at step 0 and
at the end), keeps the best checkpoint by STS-B dev, writes a resumable checkpoint, and finally
scores the best checkpoint on the STS test sets. ``report`` receives each evaluation record; it is
how Ray Tune (or anything else) watches a run. The loop itself knows nothing of Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankcse import checkpoint as ckpt
from rankcse import model_card, provenance
from rankcse.build import build_method, load_for_eval
from rankcse.collapse import collapse_reason
from rankcse.config import TrainConfig
from rankcse.corpus import Corpus, batch_rng, batches_per_epoch, iterate_batches, load_corpus
from rankcse.errors import CheckpointWriteError, ConfigError, TrainingCollapsed, TrainingDiverged
from rankcse.evaluation.final import final_scores
from rankcse.evaluation.probing import TrainingProbe
from rankcse.evaluation.step_eval import PRIMARY_METRIC, StepEvaluator
from rankcse.evaluation.transfer import check_transfer_data
from rankcse.io import (
    CONFIG_FILE,
    ERROR_FILE,
    FINAL_FILE,
    METRICS_FILE,
    PROVENANCE_FILE,
    STEP_LOG_FILE,
    replace_dir,
    staging_dir,
    write_json_atomic,
    write_text_atomic,
)
from rankcse.methods import Method
from rankcse.phases import PHASE_1, PHASE_2, PeakDetector, metric_resolution
from rankcse.rank import rank_metrics
from rankcse.rr import RRSchedule, rr_entropy
from rankcse.st_export import needs_custom_module

log = logging.getLogger("rankcse")

#: ``report(record, checkpoint_dir)``: called after every evaluation; ``checkpoint_dir`` is the resume
#: checkpoint written at that step, or None.
Reporter = Callable[[dict[str, Any], "Path | None"], None]

RUN_FILES = (METRICS_FILE, STEP_LOG_FILE, FINAL_FILE, ERROR_FILE, CONFIG_FILE, PROVENANCE_FILE, "best", "last")
#: Settings that may differ when a run is resumed (they do not change what is computed).
#: Settings that may differ when a run is resumed: where the output goes and how fast it runs, the tests after training, the
#: probing measurements (they do not feed back into training or checkpoint selection), and the corpus path (its content is
#: checked by hash). Every other setting, ``data_dir`` included (STS-B dev selects the best checkpoint), must stay the same.
RESUME_MAY_CHANGE = {"log_every", "num_threads", "device", "eval_batch_size", "final_tasks", "checkpoint_every_evals", "train_file"}
RESUME_MAY_CHANGE |= {"probing_tasks", "probing_every_evals", "probing_data_dir", "probing_corpus", "transfer_tasks"}  # measurements only
#: Scratch names a run writes next to its files (checkpoint swaps, atomic writes); removed with the run.
_SCRATCH = re.compile(r"(best|last)\.(new|old)|\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.tmp-\d+")


@dataclass
class RunResult:
    """Summary of a finished run."""

    output_dir: Path
    steps: int
    best_step: int | None
    best_stsb_dev: float | None
    final: dict[str, Any] | None
    peak_step: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _State:
    """Everything that advances during training (and is restored on resume)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float = -math.inf
    best_step: int | None = None
    rr_switch_step: int | None = None
    detector: PeakDetector = field(default_factory=PeakDetector)
    train_seconds: float = 0.0

    def progress(self) -> dict[str, Any]:
        """The state as plain values (saved in the resume checkpoint)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "rr_switch_step": self.rr_switch_step,
            "detector": self.detector.state_dict(),
            "train_seconds": self.train_seconds,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take back what :meth:`progress` saved."""
        self.step, self.epoch, self.batch_in_epoch = data["step"], data["epoch"], data["batch_in_epoch"]
        self.best_value, self.best_step, self.rr_switch_step = data["best_value"], data["best_step"], data["rr_switch_step"]
        self.detector.load_state_dict(data["detector"])
        self.train_seconds = data["train_seconds"]


class _Window:
    """Running means of per-step values between two evaluations."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        """The running sums (saved in the resume checkpoint, so a resumed window averages over all its steps)."""
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.sums, self.count = dict(data["sums"]), int(data["count"])


class _Progress:
    """The periodic progress line: steps per second since the last line or evaluation, and the time left."""

    def __init__(self, step: int, total: int) -> None:
        self.total = total
        self.restart(step)

    def restart(self, step: int) -> None:
        self.step, self.tick = step, time.perf_counter()

    def log(self, step: int, means: dict[str, float]) -> None:
        rate = (step - self.step) / max(1e-9, time.perf_counter() - self.tick)
        eta = (self.total - step) / max(rate, 1e-9)
        log.info(
            "step %d/%d | loss %.4f | rr %.4f | batch erank %.1f | %.2f steps/s | eta %s",
            step,
            self.total,
            means.get("loss/total", float("nan")),
            means.get("loss/rr", 0.0),
            means.get("batch/erank_vne", float("nan")),
            rate,
            _fmt_seconds(eta),
        )
        self.restart(step)


# -- set-up helpers -------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def pick_amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 (fp16 where bf16 is unsupported) on CUDA for ``auto``, none on CPU."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then linear decay to 0 at ``total`` (Hugging Face's default)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> tuple[Path | None, bool]:
    """Decide what to do with ``out``: ``(resume checkpoint or None, whether old run files must be cleared)``.

    Nothing is changed here, so a run that fails validation leaves an existing run untouched.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} is a file; pass a folder")
    used = out.is_dir() and any((out / name).exists() for name in RUN_FILES)
    if used and overwrite:
        return None, True
    if used and not resume:
        raise ConfigError(f"output dir {out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    last = ckpt.find_complete(out / "last") if (resume and out.is_dir()) else None
    # Resuming a run that never wrote a checkpoint starts it afresh.
    return last, used and last is None


def is_run_file(name: str) -> bool:
    """Whether ``name`` in a run folder is one of the run's own files (or a scratch name of one), not the user's."""
    return name in RUN_FILES or _SCRATCH.fullmatch(name) is not None


def clear_run_files(out: Path) -> None:
    """Remove the files of an earlier run (exactly rankcse's own names; other files in the folder stay)."""
    for p in out.iterdir():
        if is_run_file(p.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _rescue_stale_stage(stage: Path, out: Path) -> None:
    """Move back user files a killed ``--overwrite`` left in its scratch folder (it died mid-swap); the rest is scratch."""
    if not stage.is_dir():
        return
    for p in stage.iterdir():
        if not is_run_file(p.name) and not (out / p.name).exists():
            os.rename(p, out / p.name)


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop records after ``max_step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _append_jsonl(handle: Any, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, allow_nan=False, default=_json_default) + "\n")
    handle.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats by None so every record is strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


# -- the run --------------------------------------------------------------------------------------


def build_detector(cfg: TrainConfig) -> PeakDetector:
    """The online peak detector of a run, its margin set by the phase metric's resolution."""
    return PeakDetector(
        patience=cfg.peak_patience,
        drop=cfg.peak_drop,
        plateau=cfg.peak_plateau,
        tolerance=cfg.peak_tolerance,
        resolution=metric_resolution(cfg.phase_metric),
    )


class Trainer:
    """One training run; use :func:`run` unless you need the pieces."""

    def __init__(
        self, cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False
    ) -> None:
        self.cfg = cfg = cfg.resolved()
        self.out = Path(output_dir).expanduser().resolve()
        #: Where the run ends up; ``self.out`` differs from it while an --overwrite run is built beside the previous one.
        self.final_out = self.out
        self.report = report
        self.checkpoint_every_evals = cfg.checkpoint_every_evals
        self.stop_requested: int | None = None
        resume_from, clear = check_output_dir(self.out, resume, overwrite)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.device)
        self.amp_dtype = pick_amp_dtype(cfg.precision, self.device)
        self.schedule = RRSchedule.parse(cfg.rr_schedule)
        # Everything that can fail on bad input happens before the output folder is touched.
        self.evaluator = StepEvaluator(cfg.data_dir, cfg.probe_size, cfg.rank_normalize)
        self.prober = (
            TrainingProbe(cfg.probing_tasks, cfg.probing_every_evals, cfg.eval_every, cfg.probing_data_dir, cfg.probing_corpus)
            if cfg.probing_tasks
            else None
        )
        check_transfer_data(cfg.transfer_tasks, cfg.data_dir)
        self.corpus: Corpus = load_corpus(cfg.train_file, cfg.train_dataset, cfg.max_train_sentences)
        self.per_epoch = batches_per_epoch(len(self.corpus), cfg.batch_size)
        if self.per_epoch == 0:
            raise ConfigError(f"the corpus has {len(self.corpus)} sentences, fewer than one batch of {cfg.batch_size}; lower --batch-size")
        self.total_steps = cfg.max_steps or cfg.epochs * self.per_epoch
        self.method: Method = build_method(cfg).to(self.device)
        self.method.encoder.autocast_dtype = self.amp_dtype
        self.optimizer = torch.optim.AdamW(self.method.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = linear_schedule(self.optimizer, cfg.warmup_steps, self.total_steps)
        # Loss scaling only for fp16; a disabled scaler passes every call through, so there is one step path.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.state = _State(detector=build_detector(cfg))
        self.window = _Window()
        self.records: list[dict[str, Any]] = []
        if clear and overwrite:  # build the new run beside the previous one; run() swaps it in when it is whole
            _rescue_stale_stage(self.out.with_name(f".{self.out.name}.overwrite-tmp"), self.out)
            self.out = staging_dir(self.final_out, "overwrite")
        elif clear:  # a run that stopped before its first checkpoint: nothing whole to keep
            clear_run_files(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and resume_from is None and clear:
            log.warning(
                "--resume: %s holds no whole resume checkpoint (the run stopped before its first one); starting again from step 0", self.out
            )
        if resume_from is not None:
            self._load_resume(resume_from)
        else:
            self._start_fresh()
        if self.corpus.skipped_undecodable:
            log.warning("corpus: %d undecodable line(s) skipped", self.corpus.skipped_undecodable)

    def request_stop(self, signum: int | None = None) -> None:
        """Stop after the current step (the state is consistent there), saving a resume checkpoint."""
        self.stop_requested = signum if signum is not None else 0

    # -- run folder and checkpoints -----------------------------------------------------------------
    def _start_fresh(self) -> None:
        """Record the config and provenance of a new run."""
        corpus = self.corpus
        self.provenance = provenance.collect(
            seed=self.cfg.seed,
            model=self.method.encoder.backbone.name_or_path,
            corpus={
                "source": corpus.source,
                "sha256": corpus.sha256,
                "sentences": len(corpus),
                "skipped_undecodable": corpus.skipped_undecodable,
                "skipped_blank": corpus.skipped_blank,
            },
            device=str(self.device),
            amp=str(self.amp_dtype) if self.amp_dtype else None,
        )
        write_json_atomic(self.out / CONFIG_FILE, self.cfg.to_dict())
        write_json_atomic(self.out / PROVENANCE_FILE, self.provenance)

    def _meta(self) -> dict[str, Any]:
        return {
            "method": self.cfg.method,
            "eval_representation": self.method.eval_representation,
            "representation": self.method.representation_spec(),
            "train_config": self.cfg.to_dict(),
            "step": self.state.step,
            PRIMARY_METRIC: self.state.best_value if math.isfinite(self.state.best_value) else None,
        }

    def _save_best(self) -> None:
        try:
            with ckpt.atomic_dir(self.out / "best") as folder:
                ckpt.save_model(self.method, folder, self._meta(), self.provenance)
        except (OSError, RuntimeError) as exc:
            raise self._write_failed("best checkpoint", self.out / "best", exc) from None

    def _save_resume(self) -> Path:
        target = self.out / "last"
        progress = {**self.state.progress(), "window": self.window.state_dict()}
        try:
            return ckpt.save_resume(
                target, progress, self.method, self.optimizer, self.scheduler, self.scaler, self.provenance, self.cfg.to_dict()
            )
        except (OSError, RuntimeError) as exc:
            raise self._write_failed("resume checkpoint", target, exc) from None

    def _write_failed(self, what: str, target: Path, exc: BaseException) -> CheckpointWriteError:
        """The one-line error for a checkpoint that could not be written: what, where, and what is still intact."""
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write stopped short: disk full or file-size limit reached"
        last = ckpt.find_complete(self.out / "last")
        if last is not None:
            step = json.loads((last / "checkpoint.json").read_text()).get("step") if (last / "checkpoint.json").is_file() else "?"
            kept = f"the last whole resume checkpoint {last} (step {step}) is intact and --resume continues from it"
        else:
            kept = "no resume checkpoint was written yet, so --resume would start again from step 0"
        return CheckpointWriteError(
            f"could not write the {what} in {target} at step {self.state.step} ({why}); {kept}; free space or raise the limit"
        )

    def _load_resume(self, folder: Path) -> None:
        data = ckpt.load_resume(folder)
        saved, now = data["config"], self.cfg.to_dict()
        changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k])
        if changed:
            raise ConfigError(
                f"cannot resume: setting {changed[0]!r} differs from the saved run "
                f"({saved.get(changed[0])!r}); use the same settings or --overwrite"
            )
        allowed = sorted(k for k in RESUME_MAY_CHANGE if k in now and saved.get(k) != now[k])
        if allowed:  # config.json keeps the values the run started with; the resume checkpoints record these
            log.warning("resuming with changed %s", ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in allowed))
        saved_corpus = data["provenance"].get("corpus", {}).get("sha256")
        if saved_corpus and self.corpus.sha256 and saved_corpus != self.corpus.sha256:
            raise ConfigError(
                f"cannot resume: the training corpus {self.corpus.source} differs from "
                "the one the run started with; use the same corpus or --overwrite"
            )
        ckpt.restore_training(data, self.method, self.optimizer, self.scheduler, self.scaler)
        self.state.restore(data)
        if "window" in data:  # written since the window's sums are saved (older checkpoints stop between evaluations only)
            self.window.load_state_dict(data["window"])
        self.provenance = data["provenance"]
        for name in (METRICS_FILE, STEP_LOG_FILE):
            _truncate_jsonl(self.out / name, self.state.step)
        metrics = self.out / METRICS_FILE
        self.records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        log.info("resumed %s at step %d/%d", self.out, self.state.step, self.total_steps)

    # -- evaluation -------------------------------------------------------------------------------
    def _evaluate(self, metrics_file: Any) -> dict[str, Any]:
        """Measure, update the best checkpoint and the peak detector, append the record, and return it."""
        started = time.perf_counter()
        embed = lambda sentences: self.method.embed(sentences, self.cfg.eval_batch_size)  # noqa: E731
        values = self.evaluator(embed)
        eval_seconds = time.perf_counter() - started
        if self.prober is not None:  # linguistic probing every few evaluations (own seconds, not in eval_seconds)
            s = self.state
            values.update(self.prober(embed) if self.prober.due(s.step, s.step >= self.total_steps) else self.prober.empty_record())
        collapsed = collapse_reason(
            {"step": self.state.step, **self.window.means(), **values},
            (self._start_record() or {}).get("probe/erank_vne"),
            self.cfg.batch_size,
        )
        self._track(values, collapsed)
        record = self._record(values, eval_seconds)
        if collapsed:
            record["collapsed"] = True
        _append_jsonl(metrics_file, record)
        self.records.append(record)
        self.window.reset()
        if collapsed:
            s = self.state
            kept = f"best/ keeps step {s.best_step}" if s.best_step is not None else "no model was kept"
            message = (
                f"representation collapsed at step {s.step} ({collapsed}); training stopped, {kept}; "
                f"final.json records the collapse; lower --learning-rate (now {self.cfg.learning_rate:g})"
            )
            raise TrainingCollapsed(s.step, message, collapsed)
        self._log_eval(values, eval_seconds)
        return record

    def _track(self, values: dict[str, Any], collapsed: str | None = None) -> None:
        """Keep the best checkpoint by STS-B dev (never a collapsed model) and feed the rank to the peak detector (the
        after-peak RR switch)."""
        s, cfg = self.state, self.cfg
        if s.step > 0 and not collapsed and values[PRIMARY_METRIC] > s.best_value:
            s.best_value, s.best_step = values[PRIMARY_METRIC], s.step
            if cfg.save_best:
                self._save_best()
        if s.detector.update(s.step, values[f"probe/{cfg.phase_metric}"]) and self.schedule.kind == "after_peak":
            s.rr_switch_step = s.step
            log.info("rank peak (%s) at step %s, declared at step %d: RR switches on", s.detector.reason, s.detector.peak_step, s.step)

    def _record(self, values: dict[str, Any], eval_seconds: float) -> dict[str, Any]:
        """The evaluation record: training progress, the window's step means, the measurements, best and phase."""
        s = self.state
        record: dict[str, Any] = {
            "step": s.step,
            "epoch": s.epoch + s.batch_in_epoch / self.per_epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "train_seconds": s.train_seconds,
            "eval_seconds": eval_seconds,
            "loss/total": None,
            "loss/rr": None,
            "rr/entropy": None,
            "rr/coef": self._rr_coef(),
            "rr/switch_step": s.rr_switch_step,
            "batch/erank_vne": None,
            "batch/energy_rank_99": None,
        }
        record.update(self.window.means())
        record.update(values)
        record["best/step"] = s.best_step
        record[f"best/{PRIMARY_METRIC}"] = s.best_value if math.isfinite(s.best_value) else None
        record["phase_online"] = PHASE_2 if s.detector.peak_step is not None else PHASE_1
        return _clean(record)

    def _start_record(self) -> dict[str, Any] | None:
        """The step-0 evaluation (the pre-trained model), if recorded."""
        return next((r for r in self.records if r.get("step") == 0), None)

    def _summary(self) -> dict[str, Any]:
        """The fields every final.json starts with, including whether training improved on the pre-trained model."""
        s = self.state
        start = (self._start_record() or {}).get(PRIMARY_METRIC)
        best = s.best_value if math.isfinite(s.best_value) else None
        return {
            "best_step": s.best_step,
            f"best_{PRIMARY_METRIC}": best,
            f"pretrained_{PRIMARY_METRIC}": start,
            "no_improvement": bool(start is not None and (best is None or best <= start)),
            "steps": s.step,
            "train_seconds": s.train_seconds,
            "eval_representation": self.method.eval_representation,
        }

    def _record_collapse(self, exc: TrainingCollapsed) -> None:
        """Write final.json (no test scores: there is no model worth testing) and error.json for a collapsed run."""
        write_json_atomic(self.out / ERROR_FILE, {"step": exc.step, "error": str(exc), "kind": "collapsed"})
        write_json_atomic(
            self.out / FINAL_FILE, {**self._summary(), "collapsed": True, "collapse": {"step": exc.step, "reason": exc.reason}}
        )

    def _log_eval(self, values: dict[str, Any], eval_seconds: float) -> None:
        s = self.state
        best = f"{100 * s.best_value:.2f}@{s.best_step}" if s.best_step is not None else "-"
        log.info(
            "eval step %d/%d | stsb_dev %.2f | erank %.1f | energy99 %d | align %.3f unif %.3f | best %s | %.1fs",
            s.step,
            self.total_steps,
            100 * values[PRIMARY_METRIC],
            values["probe/erank_vne"],
            values["probe/energy_rank_99"],
            values["alignment"],
            values["uniformity"],
            best,
            eval_seconds,
        )

    def _after_eval(self, record: dict[str, Any], evals_done: int) -> None:
        saved = None
        at_end = self.state.step >= self.total_steps
        if self.checkpoint_every_evals and self.state.step > 0 and (evals_done % self.checkpoint_every_evals == 0 or at_end):
            saved = self._save_resume()
        if self.report is not None:
            self.report(record, saved)

    # -- one optimisation step --------------------------------------------------------------------
    def _rr_coef(self) -> float:
        """The RR coefficient at the current step (the schedule may hold it at 0 until the rank peak)."""
        return self.cfg.rr_coef * self.schedule.factor(self.state.step, self.state.detector.peak_step is not None)

    def _train_step(self, sentences: list[str], batch_index: int, step_log: Any) -> None:
        """Loss of one batch (contrastive + RR), one optimiser step, and the step's log line."""
        cfg, s = self.cfg, self.state
        if batch_index == 0:
            self.method.on_epoch_start(s.epoch)
        batch = _to_device(self.method.collate(sentences, batch_rng(cfg.seed, s.epoch, batch_index)), self.device)
        self.method.train()
        with self.method.encoder.autocast():
            output = self.method(batch)
        coef = self._rr_coef()
        with torch.set_grad_enabled(coef > 0):  # the entropy is logged even when RR is off
            entropy = rr_entropy(output.views, cfg.rr_on, cfg.rr_kind)
        rr_term = coef * entropy
        total = output.loss.float() + rr_term.to(torch.float32)
        total_value = float(total.detach())
        if not math.isfinite(total_value):
            raise TrainingDiverged(
                s.step + 1, f"loss became {total_value} at step {s.step + 1}; {self._kept()}; lower --learning-rate or --rr-coef"
            )
        self._optimizer_step(total)
        self.method.after_optimizer_step(batch, output)
        s.step += 1
        s.batch_in_epoch = batch_index + 1
        rank_view = output.views["z1_post_mlp" if cfg.rr_on == "both_views" else cfg.rr_on]
        # A 64 x d spectrum is cheaper on the CPU than a float64 SVD on a GPU.
        ranks = rank_metrics(rank_view.detach().float().cpu(), cfg.rank_normalize, taus=(0.99,))
        values = {"loss/total": total_value, "loss/rr": float(rr_term.detach()), "rr/entropy": float(entropy.detach())}
        values.update({f"loss/{k}": float(v.detach()) for k, v in output.parts.items()})
        values["batch/erank_vne"] = ranks["erank_vne"]
        values["batch/energy_rank_99"] = ranks["energy_rank_99"]
        self.window.add(values)
        _append_jsonl(step_log, {"step": s.step, "lr": self.scheduler.get_last_lr()[0], "rr/coef": coef, **values})

    def _kept(self) -> str:
        """What a run that stops on an error leaves behind, for its one-line message."""
        if self.out != self.final_out:
            return f"the previous run in {self.final_out} is unchanged"
        if self.state.best_step is not None and self.cfg.save_best:
            return f"{self.out / 'best'} keeps the best model (step {self.state.best_step})"
        return "no checkpoint was written"

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, optional gradient clipping, optimiser and schedule step (through the scaler, a no-op unless fp16)."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- main loop --------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[int, list[str]]]:
        """``(index in epoch, sentences)`` from the current position until ``total_steps`` (epochs advance here)."""
        s, cfg = self.state, self.cfg
        while s.step < self.total_steps:
            for batch_index, sentences in iterate_batches(self.corpus, cfg.batch_size, cfg.seed, s.epoch, s.batch_in_epoch):
                yield batch_index, sentences
                if s.step >= self.total_steps:
                    return
            s.epoch += 1
            s.batch_in_epoch = 0

    def _result(self, final: dict[str, Any] | None) -> RunResult:
        s = self.state
        return RunResult(
            self.out, s.step, s.best_step, s.best_value if math.isfinite(s.best_value) else None, final, s.detector.peak_step, self.records
        )

    def run(self) -> RunResult:
        """Train and score (see :meth:`_train_and_score`); an --overwrite run replaces the previous one only once it is whole."""
        if self.out == self.final_out:
            return self._train_and_score()
        try:
            result = self._train_and_score()
        except TrainingCollapsed:  # a collapsed run is a result (final.json records it)
            self._swap_in()
            raise
        except BaseException:
            shutil.rmtree(self.out, ignore_errors=True)
            raise
        self._swap_in()
        result.output_dir = self.out
        return result

    def _swap_in(self) -> None:
        """Put the new run (built beside the previous one) in place of the previous run, taking the user's own files along."""
        stage, out = self.out, self.final_out
        for p in list(out.iterdir()):
            if not is_run_file(p.name):
                os.rename(p, stage / p.name)
        replace_dir(stage, out)
        self.out = out
        log.info("replaced the previous run in %s", out)

    def _train_and_score(self) -> RunResult:
        """Train to ``total_steps`` (from a resumed step if any), then run the final evaluation."""
        cfg, s = self.cfg, self.state
        log.info(
            "training %s on %s: %d steps (%d per epoch, batch %d, lr %g), rr_coef %g (%s), eval every %d, device %s%s -> %s",
            cfg.method,
            cfg.model,
            self.total_steps,
            self.per_epoch,
            cfg.batch_size,
            cfg.learning_rate,
            cfg.rr_coef,
            self.schedule,
            cfg.eval_every,
            self.device,
            f" ({self.amp_dtype})" if self.amp_dtype else "",
            self.out,
        )
        if s.step >= self.total_steps and (self.out / FINAL_FILE).is_file():
            log.info("run in %s is already finished", self.out)
            return self._result(json.loads((self.out / FINAL_FILE).read_text()))
        evals_done = sum(1 for r in self.records if r["step"] > 0)
        progress = _Progress(s.step, self.total_steps)
        previous = _install_stop_handlers(self)
        try:
            with open(self.out / METRICS_FILE, "a") as metrics_file, open(self.out / STEP_LOG_FILE, "a") as step_log:
                if s.step == 0 and not self.records:
                    self._after_eval(self._evaluate(metrics_file), 0)
                for batch_index, sentences in self._batches():
                    started = time.perf_counter()
                    try:
                        self._train_step(sentences, batch_index, step_log)
                    except TrainingDiverged as exc:
                        write_json_atomic(self.out / ERROR_FILE, {"step": exc.step, "error": str(exc), "kind": "diverged"})
                        raise
                    s.train_seconds += time.perf_counter() - started
                    if s.step % cfg.log_every == 0:
                        progress.log(s.step, self.window.means())
                    if s.step % cfg.eval_every == 0 or s.step >= self.total_steps:
                        evals_done += 1
                        self._after_eval(self._evaluate(metrics_file), evals_done)
                        progress.restart(s.step)
                    if self.stop_requested is not None:
                        raise KeyboardInterrupt
        except TrainingCollapsed as exc:
            self._record_collapse(exc)
            raise
        except KeyboardInterrupt:
            if self.out != self.final_out:
                log.warning("stopped at step %d: %s (the new run is discarded)", s.step, self._kept())
            elif s.step > 0 and self.checkpoint_every_evals and self.stop_requested is not None:
                log.warning("stopped at step %d: saving a resume checkpoint in %s (continue with --resume)", s.step, self.out / "last")
                self._save_resume()
            raise
        finally:
            _restore_handlers(previous)
        return self._result(self._final_evaluation())

    def _final_evaluation(self) -> dict[str, Any]:
        """Score the best checkpoint (the last model without one) and write ``final.json``."""
        cfg, s = self.cfg, self.state
        result = self._summary()
        if result["no_improvement"]:
            log.warning(
                "no trained evaluation beat the pre-trained model on STS-B dev (%.2f at step 0); "
                "the test scores below are of a worse model",
                100 * result[f"pretrained_{PRIMARY_METRIC}"],
            )
        if cfg.final_tasks or self.prober is not None or cfg.transfer_tasks:
            best = ckpt.find_complete(self.out / "best") if cfg.save_best else None
            method = load_for_eval(str(best)).to(self.device) if best else self.method
            method.encoder.autocast_dtype = self.amp_dtype
            result["checkpoint"] = "best" if best else "last"
            result.update(final_scores(method, cfg, self.prober, f"{result['checkpoint']} checkpoint, step {s.best_step}"))
        write_json_atomic(self.out / FINAL_FILE, result)
        best = ckpt.find_complete(self.out / "best") if cfg.save_best else None
        meta = ckpt.read_meta(best) if best else None
        if meta is not None:  # the model card gains the final scores
            model_card.write(best, meta, result, custom_module=needs_custom_module(best))
        return result


def _install_stop_handlers(trainer: Trainer) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the loop to stop after the current step (state is consistent there); a second one stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested is not None:
            raise KeyboardInterrupt
        trainer.request_stop(signum)
        log.warning("signal %d: stopping after this step (send again to stop now)", signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. inside a Ray worker): keep the default handling
            pass
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def run(
    cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False
) -> RunResult:
    """Train one run and return its summary (see :class:`Trainer`)."""
    return Trainer(cfg, output_dir, report, resume, overwrite).run()
