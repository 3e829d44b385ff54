"""Detect a collapsed representation at an evaluation, so a run stops instead of saving a useless model.

A run has collapsed when, at a trained evaluation (step > 0), either

- the probe rank (``probe/erank_vne`` of the STS-B dev probe set) is near 1 (at most ``PROBE_RANK_FLOOR``), or
- the contrastive loss is pinned at its chance value ln(batch) (at least ``LOSS_PINNED`` of it) while the
  training batch's rank is below ``BATCH_RANK_FLOOR`` and the probe rank has halved since step 0.

Both are judged against the model's own start: a model whose probe rank is already below
``MIN_START_RANK`` at step 0 (a randomly initialised toy model is) has nothing to collapse from and is
never flagged. Healthy fine-tuning of a pre-trained encoder keeps its probe rank far above 1.5.
"""

from __future__ import annotations

import math
from typing import Any

from rankcse.errors import TrainingCollapsed

PROBE_RANK = "probe/erank_vne"
PROBE_RANK_FLOOR = 1.5
MIN_START_RANK = 3.0
BATCH_RANK_FLOOR = 2.0
LOSS_PINNED = 0.98


def collapse_reason(record: dict[str, Any], start_rank: float | None, batch_size: int) -> str | None:
    """Why the evaluation ``record`` shows a collapsed representation, or None when it does not."""
    rank = record.get(PROBE_RANK)
    if record.get("step", 0) <= 0 or not _number(rank) or not _number(start_rank) or start_rank < MIN_START_RANK:
        return None
    if rank <= PROBE_RANK_FLOOR:
        return f"probe rank (erank_vne) {rank:.2f}, down from {start_rank:.2f} at step 0"
    loss, batch_rank, chance = record.get("loss/cl"), record.get("batch/erank_vne"), math.log(batch_size)
    if _number(loss) and _number(batch_rank) and loss >= LOSS_PINNED * chance and batch_rank < BATCH_RANK_FLOOR and rank <= start_rank / 2:
        return f"contrastive loss {loss:.3f} pinned at ln(batch {batch_size}) = {chance:.3f}, batch rank {batch_rank:.2f}"
    return None


def collapse_error(step: int, reason: str, best_step: int | None, learning_rate: float) -> TrainingCollapsed:
    """The one-line error that stops a collapsed run: where, why, what was kept, and the fix."""
    kept = f"best/ keeps step {best_step}" if best_step is not None else "no model was kept"
    message = (
        f"representation collapsed at step {step} ({reason}); training stopped, {kept}; "
        f"final.json records the collapse; lower --learning-rate (now {learning_rate:g})"
    )
    return TrainingCollapsed(step, message, reason)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
