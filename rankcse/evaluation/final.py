"""The final evaluation of a run: STS test sets, full-setting probing and transfer tasks on one checkpoint, into ``final.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from rankcse import checkpoint as ckpt
from rankcse.build import load_for_eval
from rankcse.config import TrainConfig
from rankcse.evaluation.probing import TrainingProbe
from rankcse.evaluation.sts import evaluate_sts
from rankcse.evaluation.transfer import evaluate_transfer
from rankcse.io import FINAL_FILE, write_json_atomic
from rankcse.methods import Method
from rankcse.names import PRIMARY

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


def write_final(
    out: Path, cfg: TrainConfig, result: dict[str, Any], last: Method, prober: TrainingProbe | None, device: torch.device
) -> dict[str, Any]:
    """Score the best checkpoint in ``out`` (``last``, the model in memory, without one), add the scores to the run's
    ``result`` summary, write ``final.json`` and the scores into the best model's card; return the whole result."""
    if result["no_improvement"]:
        log.warning(
            "no trained evaluation beat the pre-trained model on STS-B dev (%.2f at step 0); the test scores below are of a worse model",
            100 * result[f"pretrained_{PRIMARY.name}"],
        )
    best = ckpt.find_complete(out / "best") if cfg.save_best else None
    if cfg.final_tasks or prober is not None or cfg.transfer_tasks:
        method = load_for_eval(str(best)).to(device) if best else last
        method.encoder.autocast_dtype = last.encoder.autocast_dtype
        result["checkpoint"] = "best" if best else "last"
        result.update(final_scores(method, cfg, prober, f"{result['checkpoint']} checkpoint, step {result['best_step']}"))
    write_json_atomic(out / FINAL_FILE, result)
    if best is not None:  # the model card gains the final scores
        ckpt.add_final_scores(best, result)
    return result
