"""The training loop: one run of one method, with rank tracking, RR, evaluation and checkpoints.

``run(cfg, output_dir, report=...)`` trains, evaluates every ``eval_every`` steps (and at step 0 and
at the end), keeps the best checkpoint by STS-B dev, writes a resumable checkpoint, and finally
scores the best checkpoint on the STS test sets. ``report`` receives each evaluation record; it is
how Ray Tune (or anything else) watches a run. The loop itself knows nothing of Ray.

The pieces around the loop live beside it: :mod:`rankcse.run_folder` (the output folder, --overwrite, --resume's
checks), :mod:`rankcse.runtime` (seeds, device, stop signals), :mod:`rankcse.train_state` (what advances and what is
reported), :mod:`rankcse.optimization` (optimiser, schedule, loss scaler), :mod:`rankcse.evaluation.final` (the final
evaluation) and :mod:`rankcse.io` (the JSONL writer).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from rankcse import checkpoint as ckpt
from rankcse import hf_compat, provenance
from rankcse.build import build_method
from rankcse.collapse import collapse_error, collapse_reason
from rankcse.config import TrainConfig
from rankcse.corpus import Corpus, batch_rng, batches_from, batches_per_epoch, load_corpus
from rankcse.errors import ConfigError, TrainingCollapsed, TrainingDiverged
from rankcse.evaluation.final import write_final
from rankcse.evaluation.probing import TrainingProbe
from rankcse.evaluation.step_eval import StepEvaluator
from rankcse.evaluation.transfer import check_transfer_data
from rankcse.io import ERROR_FILE, FINAL_FILE, METRICS_FILE, STEP_LOG_FILE, append_jsonl, write_json_atomic
from rankcse.methods import Method
from rankcse.names import PRIMARY
from rankcse.optimization import Optimization
from rankcse.rank import rank_metrics
from rankcse.rr import RRSchedule, rr_entropy
from rankcse.run_folder import RunFolder, check_resumable, record_start, rewind
from rankcse.runtime import pick_amp_dtype, pick_device, seed_everything, stop_on_signals, to_device
from rankcse.train_state import Progress, RunResult, RunState, Window, build_detector, eval_record, step_values, summary

log = logging.getLogger("rankcse")

#: ``report(record, checkpoint_dir)``: called after every evaluation; ``checkpoint_dir`` is the resume
#: checkpoint written at that step, or None.
Reporter = Callable[[dict[str, Any], "Path | None"], None]

__all__ = ["Reporter", "RunResult", "Trainer", "run"]


class Trainer:
    """One training run; use :func:`run` unless you need the pieces.

    Read top to bottom: set-up, :meth:`run` and the loop (:meth:`_train_and_score`, :meth:`_loop`), one step
    (:meth:`_train_step`), one evaluation (:meth:`_evaluate`), the end of a run, then the checkpoints.
    """

    def __init__(
        self, cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False
    ) -> None:
        self.cfg = cfg = cfg.resolved()
        self.report = report
        self.checkpoint_every_evals = cfg.checkpoint_every_evals
        self.stop_requested: int | None = None
        self.folder = RunFolder(Path(output_dir).expanduser().resolve(), resume, overwrite)
        self._set_up(cfg)  # everything that can fail on bad input happens before the output folder is touched
        self.folder.open()
        if self.folder.resume_from is not None:
            self._load_resume(self.folder.resume_from)
        else:
            self._start_fresh()
        if self.corpus.skipped_undecodable:
            log.warning("corpus: %d undecodable line(s) skipped", self.corpus.skipped_undecodable)

    def _set_up(self, cfg: TrainConfig) -> None:
        """Seeds, device, evaluators, corpus, model, optimiser and schedule; nothing is written."""
        hf_compat.warn_if_untested()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.device)
        self.amp_dtype = pick_amp_dtype(cfg.precision, self.device)
        self.schedule = RRSchedule.parse(cfg.rr_schedule)
        self.evaluator = StepEvaluator(cfg.data_dir, cfg.probe_size, cfg.rank_normalize)
        probing = (cfg.probing_tasks, cfg.probing_every_evals, cfg.eval_every, cfg.probing_data_dir, cfg.probing_corpus)
        self.prober = TrainingProbe(*probing) if cfg.probing_tasks else None
        check_transfer_data(cfg.transfer_tasks, cfg.data_dir)
        self.corpus: Corpus = load_corpus(cfg.train_file, cfg.train_dataset, cfg.max_train_sentences)
        self.per_epoch = batches_per_epoch(len(self.corpus), cfg.batch_size)
        if self.per_epoch == 0:
            raise ConfigError(f"the corpus has {len(self.corpus)} sentences, fewer than one batch of {cfg.batch_size}; lower --batch-size")
        self.total_steps = cfg.max_steps or cfg.epochs * self.per_epoch
        self.method: Method = build_method(cfg).to(self.device)
        self.method.encoder.autocast_dtype = self.amp_dtype
        self.optim = Optimization(self.method.trainable_parameters, cfg, self.total_steps, self.amp_dtype)
        self.state = RunState(detector=build_detector(cfg))
        self.window = Window()
        self.records: list[dict[str, Any]] = []

    @property
    def out(self) -> Path:
        """The folder the run writes in (a scratch folder beside the previous run while an --overwrite run is built)."""
        return self.folder.path

    def request_stop(self, signum: int | None = None) -> None:
        """Stop after the current step (the state is consistent there), saving a resume checkpoint."""
        self.stop_requested = signum if signum is not None else 0

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train and score (see :meth:`_train_and_score`); an --overwrite run replaces the previous one only once it is whole."""
        with self.folder.built():
            result = self._train_and_score()
        result.output_dir = self.out
        return result

    def _train_and_score(self) -> RunResult:
        """Train to ``total_steps`` (from a resumed step if any), then run the final evaluation."""
        s = self.state
        log.info("training %s", _describe(self))
        if s.step >= self.total_steps and (self.out / FINAL_FILE).is_file():
            log.info("run in %s is already finished", self.out)
            return self._result(json.loads((self.out / FINAL_FILE).read_text()))
        with stop_on_signals(self):
            try:
                with open(self.out / METRICS_FILE, "a") as metrics_file, open(self.out / STEP_LOG_FILE, "a") as step_log:
                    self._loop(metrics_file, step_log)
            except TrainingDiverged as exc:
                write_json_atomic(self.out / ERROR_FILE, {"step": exc.step, "error": str(exc), "kind": "diverged"})
                raise
            except TrainingCollapsed as exc:
                self._record_collapse(exc)
                raise
            except KeyboardInterrupt:
                self._on_stop()
                raise
        return self._result(write_final(self.out, self.cfg, self._summary(), self.method, self.prober, self.device))

    def _loop(self, metrics_file: IO[str], step_log: IO[str]) -> None:
        """Evaluate the pre-trained model, then step to ``total_steps``, evaluating every ``eval_every`` steps and at the end."""
        s, cfg = self.state, self.cfg
        evals_done = sum(1 for r in self.records if r["step"] > 0)
        progress = Progress(s.step, self.total_steps)
        if s.step == 0 and not self.records:
            self._after_eval(self._evaluate(metrics_file), 0)
        for batch_index, sentences in batches_from(self.corpus, cfg.batch_size, cfg.seed, s, self.total_steps):
            started = time.perf_counter()
            self._train_step(sentences, batch_index, step_log)
            s.train_seconds += time.perf_counter() - started
            if s.step % cfg.log_every == 0:
                progress.log(s.step, self.window.means())
            if s.step % cfg.eval_every == 0 or s.step >= self.total_steps:
                evals_done += 1
                self._after_eval(self._evaluate(metrics_file), evals_done)
                progress.restart(s.step)
            if self.stop_requested is not None:
                raise KeyboardInterrupt

    def _on_stop(self) -> None:
        """Interrupted: a new --overwrite run is discarded (by :meth:`run`); a stop a signal asked for saves a resume checkpoint."""
        s = self.state
        if self.folder.staged:
            log.warning("stopped at step %d: %s (the new run is discarded)", s.step, self._kept())
        elif s.step > 0 and self.checkpoint_every_evals and self.stop_requested is not None:
            log.warning("stopped at step %d: saving a resume checkpoint in %s (continue with --resume)", s.step, self.out / "last")
            self._save_resume()

    # -- one optimisation step --------------------------------------------------------------------
    def _train_step(self, sentences: list[str], batch_index: int, step_log: IO[str]) -> None:
        """Loss of one batch (contrastive + RR), one optimiser step, and the step's log line."""
        cfg, s = self.cfg, self.state
        if batch_index == 0:
            self.method.on_epoch_start(s.epoch)
        batch = to_device(self.method.collate(sentences, batch_rng(cfg.seed, s.epoch, batch_index)), self.device)
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
        self.optim.step(total)
        self.method.after_optimizer_step(batch, output)
        s.step += 1
        s.batch_in_epoch = batch_index + 1
        rank_view = output.views["z1_post_mlp" if cfg.rr_on == "both_views" else cfg.rr_on]
        # A 64 x d spectrum is cheaper on the CPU than a float64 SVD on a GPU.
        ranks = rank_metrics(rank_view.detach().float().cpu(), cfg.rank_normalize, taus=(0.99,))
        parts = {k: float(v.detach()) for k, v in output.parts.items()}
        values = step_values(total_value, float(rr_term.detach()), float(entropy.detach()), parts, ranks)
        self.window.add(values)
        append_jsonl(step_log, {"step": s.step, "lr": self.optim.lr, "rr/coef": coef, **values})

    def _rr_coef(self) -> float:
        """The RR coefficient at the current step (the schedule may hold it at 0 until the rank peak)."""
        return self.cfg.rr_coef * self.schedule.factor(self.state.step, self.state.detector.peak_step is not None)

    # -- one evaluation ---------------------------------------------------------------------------
    def _evaluate(self, metrics_file: IO[str]) -> dict[str, Any]:
        """Measure, update the best checkpoint and the peak detector, append the record, and return it."""
        s, started = self.state, time.perf_counter()
        embed = lambda sentences: self.method.embed(sentences, self.cfg.eval_batch_size)  # noqa: E731
        values = self.evaluator(embed)
        eval_seconds = time.perf_counter() - started
        if self.prober is not None:  # linguistic probing every few evaluations (own seconds, not in eval_seconds)
            values.update(self.prober(embed) if self.prober.due(s.step, s.step >= self.total_steps) else self.prober.empty_record())
        start_rank = (self._start_record() or {}).get("probe/erank_vne")
        collapsed = collapse_reason({"step": s.step, **self.window.means(), **values}, start_rank, self.cfg.batch_size)
        self._track(values, collapsed)
        epoch = s.epoch + s.batch_in_epoch / self.per_epoch
        record = eval_record(s, epoch, self.optim.lr, self._rr_coef(), eval_seconds, self.window.means(), values)
        if collapsed:
            record["collapsed"] = True
        append_jsonl(metrics_file, record)
        self.records.append(record)
        self.window.reset()
        if collapsed:
            raise collapse_error(s.step, collapsed, s.best_step, self.cfg.learning_rate)
        _log_eval(self, values, eval_seconds)
        return record

    def _track(self, values: dict[str, Any], collapsed: str | None = None) -> None:
        """Keep the best checkpoint by the primary metric (never a collapsed model) and feed the rank to the peak detector
        (the after-peak RR switch)."""
        s, cfg = self.state, self.cfg
        if s.step > 0 and not collapsed and PRIMARY.better(values[PRIMARY.name], s.best_value):
            s.best_value, s.best_step = values[PRIMARY.name], s.step
            if cfg.save_best:
                meta = ckpt.run_meta(self.method, cfg.to_dict(), s.step, s.best)
                self.folder.save_best(self.method, meta, self.provenance)
        if s.detector.update(s.step, values[f"probe/{cfg.phase_metric}"]) and self.schedule.kind == "after_peak":
            s.rr_switch_step = s.step
            log.info("rank peak (%s) at step %s, declared at step %d: RR switches on", s.detector.reason, s.detector.peak_step, s.step)

    def _after_eval(self, record: dict[str, Any], evals_done: int) -> None:
        """Write the resume checkpoint when due, then report the record (with that checkpoint, if any)."""
        saved = None
        at_end = self.state.step >= self.total_steps
        if self.checkpoint_every_evals and self.state.step > 0 and (evals_done % self.checkpoint_every_evals == 0 or at_end):
            saved = self._save_resume()
        if self.report is not None:
            self.report(record, saved)

    def _start_record(self) -> dict[str, Any] | None:
        """The step-0 evaluation (the pre-trained model), if recorded."""
        return next((r for r in self.records if r.get("step") == 0), None)

    # -- the end ----------------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        return summary(self.state, (self._start_record() or {}).get(PRIMARY.name), self.method.eval_representation)

    def _record_collapse(self, exc: TrainingCollapsed) -> None:
        """Write final.json (no test scores: there is no model worth testing) and error.json for a collapsed run."""
        write_json_atomic(self.out / ERROR_FILE, {"step": exc.step, "error": str(exc), "kind": "collapsed"})
        collapse = {"collapsed": True, "collapse": {"step": exc.step, "reason": exc.reason}}
        write_json_atomic(self.out / FINAL_FILE, {**self._summary(), **collapse})

    def _result(self, final: dict[str, Any] | None) -> RunResult:
        s = self.state
        return RunResult(self.out, s.step, s.best_step, s.best, final, s.detector.peak_step, self.records)

    def _kept(self) -> str:
        """What a run that stops on an error leaves behind, for its one-line message."""
        return self.folder.kept(self.state.best_step if self.cfg.save_best else None)

    # -- run folder and checkpoints ---------------------------------------------------------------
    def _start_fresh(self) -> None:
        """Record the config and provenance of a new run."""
        amp = str(self.amp_dtype) if self.amp_dtype else None
        model = self.method.encoder.backbone.name_or_path
        self.provenance = provenance.of_run(self.cfg.seed, model, self.corpus, str(self.device), amp)
        record_start(self.out, self.cfg.to_dict(), self.provenance)

    def _load_resume(self, folder: Path) -> None:
        """Continue from a resume checkpoint: same settings and corpus, the training state restored, the logs cut back to it."""
        data = ckpt.load_resume(folder)
        check_resumable(data, self.cfg.to_dict(), self.corpus.sha256, self.corpus.source)
        ckpt.restore_training(data, self.method, *self.optim.parts())
        self.state.restore(data)
        if "window" in data:  # written since the window's sums are saved (older checkpoints stop between evaluations only)
            self.window.load_state_dict(data["window"])
        self.provenance = data["provenance"]
        self.records = rewind(self.out, self.state.step)
        log.info("resumed %s at step %d/%d", self.out, self.state.step, self.total_steps)

    def _save_resume(self) -> Path:
        progress = {**self.state.progress(), "window": self.window.state_dict()}
        return self.folder.save_resume(progress, self.method, *self.optim.parts(), self.provenance, self.cfg.to_dict())


def _describe(t: Trainer) -> str:
    """The run in one line, for the log: method, model, steps, batch, rate, RR, evaluation, device and folder."""
    cfg = t.cfg
    amp = f" ({t.amp_dtype})" if t.amp_dtype else ""
    return (
        f"{cfg.method} on {cfg.model}: {t.total_steps} steps ({t.per_epoch} per epoch, batch {cfg.batch_size}, lr {cfg.learning_rate:g}), "
        f"rr_coef {cfg.rr_coef:g} ({t.schedule}), eval every {cfg.eval_every}, device {t.device}{amp} -> {t.out}"
    )


def _log_eval(t: Trainer, values: dict[str, Any], eval_seconds: float) -> None:
    """The evaluation's log line: the primary metric, ranks, alignment and uniformity, the best so far."""
    s = t.state
    best = f"{100 * s.best_value:.2f}@{s.best_step}" if s.best_step is not None else "-"
    log.info(
        "eval step %d/%d | %s %.2f | erank %.1f | energy99 %d | align %.3f unif %.3f | best %s | %.1fs",
        s.step,
        t.total_steps,
        PRIMARY.name,
        100 * values[PRIMARY.name],
        values["probe/erank_vne"],
        values["probe/energy_rank_99"],
        values["alignment"],
        values["uniformity"],
        best,
        eval_seconds,
    )


def run(
    cfg: TrainConfig, output_dir: str | Path, report: Reporter | None = None, resume: bool = False, overwrite: bool = False
) -> RunResult:
    """Train one run and return its summary (see :class:`Trainer`)."""
    return Trainer(cfg, output_dir, report, resume, overwrite).run()
