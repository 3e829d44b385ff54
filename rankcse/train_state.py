"""What advances during a training run and what it reports: the state a resume restores, the running means between two
evaluations, the progress line, the evaluation record and the summary every ``final.json`` starts with."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankcse.config import TrainConfig
from rankcse.io import finite_or_none
from rankcse.names import PRIMARY
from rankcse.phases import PHASE_1, PHASE_2, PeakDetector, metric_resolution

log = logging.getLogger("rankcse")


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


def build_detector(cfg: TrainConfig) -> PeakDetector:
    """The online peak detector of a run, its margin set by the phase metric's resolution."""
    return PeakDetector(
        patience=cfg.peak_patience,
        drop=cfg.peak_drop,
        plateau=cfg.peak_plateau,
        tolerance=cfg.peak_tolerance,
        resolution=metric_resolution(cfg.phase_metric),
    )


@dataclass
class RunState:
    """Everything that advances during training (and is restored on resume)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float = PRIMARY.worst
    best_step: int | None = None
    rr_switch_step: int | None = None
    detector: PeakDetector = field(default_factory=PeakDetector)
    train_seconds: float = 0.0

    @property
    def best(self) -> float | None:
        """The best value of the primary metric so far (None before the first trained evaluation)."""
        return self.best_value if math.isfinite(self.best_value) else None

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


class Window:
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


class Progress:
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
            fmt_seconds(eta),
        )
        self.restart(step)


def fmt_seconds(seconds: float) -> str:
    """``1h02m`` or ``3m05s``; ``?`` for an unknown time."""
    if not math.isfinite(seconds):
        return "?"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def step_values(total: float, rr_term: float, entropy: float, parts: dict[str, float], ranks: dict[str, float]) -> dict[str, float]:
    """What one optimisation step logs: the total loss, the RR term and entropy, the method's loss parts, the batch's rank."""
    values = {"loss/total": total, "loss/rr": rr_term, "rr/entropy": entropy}
    values.update({f"loss/{k}": v for k, v in parts.items()})
    values["batch/erank_vne"] = ranks["erank_vne"]
    values["batch/energy_rank_99"] = ranks["energy_rank_99"]
    return values


def eval_record(
    s: RunState, epoch: float, lr: float, rr_coef: float, eval_seconds: float, means: dict[str, float], values: dict[str, Any]
) -> dict[str, Any]:
    """The evaluation record: training progress, the window's step ``means``, the measured ``values``, best and phase.

    Every key a record can have is present (None where not measured), in the same order in every record.
    """
    record: dict[str, Any] = {"step": s.step, "epoch": epoch, "lr": lr, "train_seconds": s.train_seconds, "eval_seconds": eval_seconds}
    record.update(dict.fromkeys(("loss/total", "loss/rr", "rr/entropy")))
    record.update({"rr/coef": rr_coef, "rr/switch_step": s.rr_switch_step, "batch/erank_vne": None, "batch/energy_rank_99": None})
    record.update(means)
    record.update(values)
    record["best/step"] = s.best_step
    record[f"best/{PRIMARY.name}"] = s.best
    record["phase_online"] = PHASE_2 if s.detector.peak_step is not None else PHASE_1
    return finite_or_none(record)


def summary(s: RunState, start: float | None, eval_representation: str) -> dict[str, Any]:
    """The fields every final.json starts with; ``start`` is the pre-trained model's (step 0) primary metric, if recorded."""
    best = s.best
    return {
        "best_step": s.best_step,
        PRIMARY.best: best,
        f"pretrained_{PRIMARY.name}": start,
        "no_improvement": bool(start is not None and (best is None or not PRIMARY.better(best, start))),
        "steps": s.step,
        "train_seconds": s.train_seconds,
        "eval_representation": eval_representation,
    }
