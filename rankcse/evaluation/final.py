"""The final evaluation of a run: STS test sets, full-setting probing and transfer tasks on one checkpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

from rankcse.config import TrainConfig
from rankcse.evaluation.probing import TrainingProbe
from rankcse.evaluation.sts import evaluate_sts
from rankcse.evaluation.transfer import evaluate_transfer
from rankcse.methods import Method

log = logging.getLogger("rankcse")


def format_scores(scores: dict[str, float], avg: float | None = None) -> str:
    """One line of STS scores ×100."""
    parts = [f"{k} {100 * v:.2f}" for k, v in scores.items()]
    if avg is not None:
        parts.append(f"avg {100 * avg:.2f}")
    return " | ".join(parts)


def final_scores(method: Method, cfg: TrainConfig, prober: TrainingProbe | None, label: str) -> dict[str, Any]:
    """Every final score of ``method`` the config asks for (``label`` names the checkpoint in the log)."""
    embed = lambda sentences: method.embed(sentences, cfg.eval_batch_size)  # noqa: E731
    result: dict[str, Any] = {}
    if cfg.final_tasks:
        started = time.perf_counter()
        sts = evaluate_sts(embed, cfg.final_tasks, cfg.data_dir)
        result.update(sts["scores"])
        result["avg"] = sts["avg"]
        result["details"] = sts["tasks"]
        result["eval_seconds"] = time.perf_counter() - started
        log.info("final (%s): %s", label, format_scores(sts["scores"], sts["avg"]))
    if prober is not None:  # full-setting probing of the same checkpoint
        result.update(prober.final(embed))
    if cfg.transfer_tasks:
        started = time.perf_counter()
        result["transfer"] = evaluate_transfer(embed, cfg.transfer_tasks, cfg.data_dir)
        result.update({f"transfer/{task}": scores["acc"] for task, scores in result["transfer"].items()})
        result["transfer_seconds"] = time.perf_counter() - started
    return result
