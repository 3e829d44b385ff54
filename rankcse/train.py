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
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankcse import checkpoint as ckpt
from rankcse import model_card, provenance
from rankcse.build import build_method, load_for_eval
from rankcse.config import TrainConfig
from rankcse.corpus import Corpus, batch_rng, batches_per_epoch, iterate_batches, load_corpus
from rankcse.errors import ConfigError, TrainingDiverged
from rankcse.evaluation.probing import TrainingProbe
from rankcse.evaluation.step_eval import PRIMARY_METRIC, StepEvaluator
from rankcse.evaluation.sts import evaluate_sts
from rankcse.evaluation.transfer import check_transfer_data, evaluate_transfer
from rankcse.methods import Method
from rankcse.phases import PHASE_1, PHASE_2, PeakDetector
from rankcse.rank import rank_metrics
from rankcse.rr import RRSchedule, rr_entropy
from rankcse.st_export import needs_custom_module

log = logging.getLogger("rankcse")

#: ``report(record, checkpoint_dir)``: called after every evaluation; ``checkpoint_dir`` is the resume
#: checkpoint written at that step, or None.
Reporter = Callable[[dict[str, Any], "Path | None"], None]

METRICS_FILE = "metrics.jsonl"
STEP_LOG_FILE = "train_log.jsonl"
FINAL_FILE = "final.json"
ERROR_FILE = "error.json"
RUN_FILES = (METRICS_FILE, STEP_LOG_FILE, FINAL_FILE, ERROR_FILE, "config.json", "provenance.json", "best", "last")
#: Settings that may differ when a run is resumed (they do not change what is computed).
RESUME_MAY_CHANGE = {"log_every", "num_threads", "device", "eval_batch_size", "final_tasks", "checkpoint_every_evals", "data_dir", "train_file"}
RESUME_MAY_CHANGE |= {"probing_tasks", "probing_every_evals", "probing_data_dir", "probing_corpus", "transfer_tasks"}  # measurements only


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


def clear_run_files(out: Path) -> None:
    """Remove the files of an earlier run (only rankcse's own; other files in the folder stay)."""
    for name in RUN_FILES:
        for p in out.glob(f"{name}*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


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


class Trainer:
    """One training run; use :func:`run` unless you need the pieces."""

    def __init__(self, cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False) -> None:
        self.cfg = cfg.resolved()
        self.out = Path(output_dir).expanduser().resolve()
        self.report = report
        self.checkpoint_every_evals = self.cfg.checkpoint_every_evals
        self._stop_signal: int | None = None
        resume_from, clear = check_output_dir(self.out, resume, overwrite)
        cfg = self.cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.device)
        self.amp_dtype = pick_amp_dtype(cfg.precision, self.device)
        self.schedule = RRSchedule.parse(cfg.rr_schedule)
        # Everything that can fail on bad input happens before the output folder is touched.
        self.evaluator = StepEvaluator(cfg.data_dir, cfg.probe_size, cfg.rank_normalize)
        self.prober = TrainingProbe(cfg.probing_tasks, cfg.probing_every_evals, cfg.eval_every, cfg.probing_data_dir, cfg.probing_corpus) if cfg.probing_tasks else None
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
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.state = _State(detector=PeakDetector(cfg.peak_patience, cfg.peak_drop))
        self.window = _Window()
        self.records: list[dict[str, Any]] = []
        if clear:
            clear_run_files(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            self._load_resume(resume_from)
        else:
            self.provenance = provenance.collect(
                seed=cfg.seed,
                model=self.method.encoder.backbone.name_or_path,
                corpus={"source": self.corpus.source, "sha256": self.corpus.sha256, "sentences": len(self.corpus), "skipped_undecodable": self.corpus.skipped_undecodable, "skipped_blank": self.corpus.skipped_blank},
                device=str(self.device),
                amp=str(self.amp_dtype) if self.amp_dtype else None,
            )
            ckpt.write_json_atomic(self.out / "config.json", cfg.to_dict())
            ckpt.write_json_atomic(self.out / "provenance.json", self.provenance)
        if self.corpus.skipped_undecodable:
            log.warning("corpus: %d undecodable line(s) skipped", self.corpus.skipped_undecodable)

    # -- checkpoints ------------------------------------------------------------------------------
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
        with ckpt.atomic_dir(self.out / "best") as folder:
            ckpt.save_model(self.method, folder, self._meta(), self.provenance)

    def _save_resume(self) -> Path:
        s = self.state
        trainer_state = {
            "config": self.cfg.to_dict(),
            "step": s.step,
            "epoch": s.epoch,
            "batch_in_epoch": s.batch_in_epoch,
            "best_value": s.best_value,
            "best_step": s.best_step,
            "rr_switch_step": s.rr_switch_step,
            "detector": s.detector.state_dict(),
            "train_seconds": s.train_seconds,
            "method": self.method.state_dict(),
            "method_extra": self.method.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "provenance": self.provenance,
        }
        target = self.out / "last"
        with ckpt.atomic_dir(target) as folder:
            torch.save(trainer_state, folder / ckpt.STATE_FILE)
            ckpt.write_json_atomic(folder / "checkpoint.json", {"step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch})
        return target

    def _load_resume(self, folder: Path) -> None:
        data = torch.load(folder / ckpt.STATE_FILE, map_location="cpu", weights_only=False)
        saved, now = data["config"], self.cfg.to_dict()
        changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k])
        if changed:
            raise ConfigError(f"cannot resume: setting {changed[0]!r} differs from the saved run ({saved.get(changed[0])!r}); use the same settings or --overwrite")
        saved_corpus = data["provenance"].get("corpus", {}).get("sha256")
        if saved_corpus and self.corpus.sha256 and saved_corpus != self.corpus.sha256:
            raise ConfigError(f"cannot resume: the training corpus {self.corpus.source} differs from the one the run started with; use the same corpus or --overwrite")
        self.method.load_state_dict(data["method"])
        self.method.load_extra_state(data["method_extra"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        if self.scaler and data["scaler"]:
            self.scaler.load_state_dict(data["scaler"])
        torch.set_rng_state(data["rng_cpu"])
        if data["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(data["rng_cuda"])
        s = self.state
        s.step, s.epoch, s.batch_in_epoch = data["step"], data["epoch"], data["batch_in_epoch"]
        s.best_value, s.best_step, s.rr_switch_step = data["best_value"], data["best_step"], data["rr_switch_step"]
        s.detector.load_state_dict(data["detector"])
        s.train_seconds = data["train_seconds"]
        self.provenance = data["provenance"]
        for name in (METRICS_FILE, STEP_LOG_FILE):
            _truncate_jsonl(self.out / name, s.step)
        self.records = [json.loads(line) for line in (self.out / METRICS_FILE).read_text().splitlines()] if (self.out / METRICS_FILE).is_file() else []
        log.info("resumed %s at step %d/%d", self.out, s.step, self.total_steps)

    # -- evaluation -------------------------------------------------------------------------------
    def _evaluate(self, metrics_file: Any) -> dict[str, Any]:
        s, cfg = self.state, self.cfg
        started = time.perf_counter()
        embed = lambda sentences: self.method.embed(sentences, cfg.eval_batch_size)  # noqa: E731
        values = self.evaluator(embed)
        eval_seconds = time.perf_counter() - started
        if self.prober is not None:  # linguistic probing every few evaluations (own seconds, not in eval_seconds)
            values.update(self.prober(embed) if self.prober.due(s.step, s.step >= self.total_steps) else self.prober.empty_record())
        if s.step > 0 and values[PRIMARY_METRIC] > s.best_value:
            s.best_value, s.best_step = values[PRIMARY_METRIC], s.step
            if cfg.save_best:
                self._save_best()
        peak_value = values[f"probe/{cfg.phase_metric}"]
        if s.detector.update(s.step, peak_value) and self.schedule.kind == "after_peak":
            s.rr_switch_step = s.step
            log.info("rank peak detected at step %s (seen at step %d): RR switches on", s.detector.peak_step, s.step)
        record: dict[str, Any] = {
            "step": s.step,
            "epoch": s.epoch + s.batch_in_epoch / self.per_epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "train_seconds": s.train_seconds,
            "eval_seconds": eval_seconds,
            "loss/total": None,
            "loss/rr": None,
            "rr/entropy": None,
            "rr/coef": self.cfg.rr_coef * self.schedule.factor(s.step, s.detector.peak_step is not None),
            "rr/switch_step": s.rr_switch_step,
            "batch/erank_vne": None,
            "batch/energy_rank_99": None,
        }
        record.update(self.window.means())
        record.update(values)
        record["best/step"] = s.best_step
        record[f"best/{PRIMARY_METRIC}"] = s.best_value if math.isfinite(s.best_value) else None
        record["phase_online"] = PHASE_2 if s.detector.peak_step is not None else PHASE_1
        record = _clean(record)
        _append_jsonl(metrics_file, record)
        self.records.append(record)
        self.window.reset()
        best = f"{100 * s.best_value:.2f}@{s.best_step}" if s.best_step is not None else "-"
        log.info(
            "eval step %d/%d | stsb_dev %.2f | erank %.1f | energy99 %d | align %.3f unif %.3f | best %s | %.1fs",
            s.step, self.total_steps, 100 * values[PRIMARY_METRIC], values["probe/erank_vne"], values["probe/energy_rank_99"],
            values["alignment"], values["uniformity"], best, eval_seconds,
        )
        return record

    def _after_eval(self, record: dict[str, Any], evals_done: int) -> None:
        saved = None
        at_end = self.state.step >= self.total_steps
        if self.checkpoint_every_evals and self.state.step > 0 and (evals_done % self.checkpoint_every_evals == 0 or at_end):
            saved = self._save_resume()
        if self.report is not None:
            self.report(record, saved)

    # -- one optimisation step --------------------------------------------------------------------
    def _train_step(self, sentences: list[str], batch_index: int, step_log: Any) -> None:
        cfg, s = self.cfg, self.state
        if batch_index == 0:
            self.method.on_epoch_start(s.epoch)
        batch = self.method.collate(sentences, batch_rng(cfg.seed, s.epoch, batch_index))
        batch = _to_device(batch, self.device)
        self.method.train()
        with self.method.encoder.autocast():
            output = self.method(batch)
        coef = cfg.rr_coef * self.schedule.factor(s.step, s.detector.peak_step is not None)
        if coef > 0:
            entropy = rr_entropy(output.views, cfg.rr_on, cfg.rr_kind)
        else:
            with torch.no_grad():
                entropy = rr_entropy(output.views, cfg.rr_on, cfg.rr_kind)
        rr_term = coef * entropy
        total = output.loss.float() + rr_term.to(torch.float32)
        total_value = float(total.detach())
        if not math.isfinite(total_value):
            raise TrainingDiverged(s.step + 1, f"loss became {total_value} at step {s.step + 1}; the last good checkpoint is kept in {self.out}; lower --learning-rate or --rr-coef")
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
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

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train to ``total_steps`` (from a resumed step if any), then run the final evaluation."""
        cfg, s = self.cfg, self.state
        log.info(
            "training %s on %s: %d steps (%d per epoch, batch %d, lr %g), rr_coef %g (%s), eval every %d, device %s%s -> %s",
            cfg.method, cfg.model, self.total_steps, self.per_epoch, cfg.batch_size, cfg.learning_rate, cfg.rr_coef,
            self.schedule, cfg.eval_every, self.device, f" ({self.amp_dtype})" if self.amp_dtype else "", self.out,
        )
        finished = self.out / FINAL_FILE
        if s.step >= self.total_steps and finished.is_file():
            log.info("run in %s is already finished", self.out)
            final = json.loads(finished.read_text())
            return RunResult(self.out, s.step, s.best_step, s.best_value if math.isfinite(s.best_value) else None, final, s.detector.peak_step, self.records)
        evals_done = sum(1 for r in self.records if r["step"] > 0)
        previous = _install_stop_handlers(self)
        try:
            with open(self.out / METRICS_FILE, "a") as metrics_file, open(self.out / STEP_LOG_FILE, "a") as step_log:
                if s.step == 0 and not self.records:
                    self._after_eval(self._evaluate(metrics_file), 0)
                last_log, tick = s.step, time.perf_counter()
                while s.step < self.total_steps:
                    for batch_index, sentences in iterate_batches(self.corpus, cfg.batch_size, cfg.seed, s.epoch, s.batch_in_epoch):
                        started = time.perf_counter()
                        try:
                            self._train_step(sentences, batch_index, step_log)
                        except TrainingDiverged as exc:
                            ckpt.write_json_atomic(self.out / ERROR_FILE, {"step": exc.step, "error": str(exc), "kind": "diverged"})
                            raise
                        s.train_seconds += time.perf_counter() - started
                        if s.step % cfg.log_every == 0:
                            rate = (s.step - last_log) / max(1e-9, time.perf_counter() - tick)
                            eta = (self.total_steps - s.step) / max(rate, 1e-9)
                            m = self.window.means()
                            log.info("step %d/%d | loss %.4f | rr %.4f | batch erank %.1f | %.2f steps/s | eta %s", s.step, self.total_steps, m.get("loss/total", float("nan")), m.get("loss/rr", 0.0), m.get("batch/erank_vne", float("nan")), rate, _fmt_seconds(eta))
                            last_log, tick = s.step, time.perf_counter()
                        if s.step % cfg.eval_every == 0 or s.step >= self.total_steps:
                            evals_done += 1
                            self._after_eval(self._evaluate(metrics_file), evals_done)
                            tick = time.perf_counter()
                            last_log = s.step
                        if self._stop_signal is not None:
                            raise KeyboardInterrupt
                        if s.step >= self.total_steps:
                            break
                    else:
                        s.epoch += 1
                        s.batch_in_epoch = 0
        except KeyboardInterrupt:
            if s.step > 0 and self.checkpoint_every_evals and self._stop_signal is not None:
                log.warning("stopped at step %d: saving a resume checkpoint in %s (continue with --resume)", s.step, self.out / "last")
                self._save_resume()
            raise
        finally:
            _restore_handlers(previous)
        final = self._final_evaluation()
        return RunResult(self.out, s.step, s.best_step, s.best_value if math.isfinite(s.best_value) else None, final, s.detector.peak_step, self.records)

    def _final_evaluation(self) -> dict[str, Any]:
        cfg, s = self.cfg, self.state
        result: dict[str, Any] = {
            "best_step": s.best_step,
            f"best_{PRIMARY_METRIC}": s.best_value if math.isfinite(s.best_value) else None,
            "steps": s.step,
            "train_seconds": s.train_seconds,
            "eval_representation": self.method.eval_representation,
        }
        if cfg.final_tasks or self.prober is not None or cfg.transfer_tasks:
            best = ckpt.find_complete(self.out / "best") if cfg.save_best else None
            method = load_for_eval(str(best)).to(self.device) if best else self.method
            method.encoder.autocast_dtype = self.amp_dtype
            result["checkpoint"] = "best" if best else "last"
        if cfg.final_tasks:
            started = time.perf_counter()
            sts = evaluate_sts(lambda sentences: method.embed(sentences, cfg.eval_batch_size), cfg.final_tasks, cfg.data_dir)
            result.update(sts["scores"])
            result["avg"] = sts["avg"]
            result["details"] = sts["tasks"]
            result["eval_seconds"] = time.perf_counter() - started
            log.info("final (%s checkpoint, step %s): %s", result["checkpoint"], s.best_step, format_scores(sts["scores"], sts["avg"]))
        if self.prober is not None:  # full-setting probing of the same checkpoint
            result.update(self.prober.final(lambda sentences: method.embed(sentences, cfg.eval_batch_size)))
        if cfg.transfer_tasks:
            started = time.perf_counter()
            result["transfer"] = evaluate_transfer(lambda sentences: method.embed(sentences, cfg.eval_batch_size), cfg.transfer_tasks, cfg.data_dir)
            result.update({f"transfer/{task}": scores["acc"] for task, scores in result["transfer"].items()})
            result["transfer_seconds"] = time.perf_counter() - started
        ckpt.write_json_atomic(self.out / FINAL_FILE, result)
        best = ckpt.find_complete(self.out / "best") if cfg.save_best else None
        meta = ckpt.read_meta(best) if best else None
        if meta is not None:  # the model card gains the final scores
            model_card.write(best, meta, result, custom_module=needs_custom_module(best))
        return result


def _install_stop_handlers(trainer: Trainer) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the loop to stop after the current step (state is consistent there); a second one stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer._stop_signal is not None:
            raise KeyboardInterrupt
        trainer._stop_signal = signum
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


def format_scores(scores: dict[str, float], avg: float | None = None) -> str:
    """One line of STS scores ×100."""
    parts = [f"{k} {100 * v:.2f}" for k, v in scores.items()]
    if avg is not None:
        parts.append(f"avg {100 * avg:.2f}")
    return " | ".join(parts)


def run(cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train one run and return its summary (see :class:`Trainer`)."""
    return Trainer(cfg, output_dir, report, resume, overwrite).run()
